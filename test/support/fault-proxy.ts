/**
 * A TCP proxy in front of PostgreSQL that can break connections the way networks do: reset them
 * (an RST, as when a peer or middlebox dies) or black-hole them (a silent partition: nothing is
 * delivered, nothing is closed).
 */
import { createServer, type Server, type Socket } from "node:net";

export class FaultProxy {
  readonly #server: Server;
  readonly #pairs = new Set<[Socket, Socket]>();
  /** Connections whose bytes now vanish in both directions. */
  readonly #blackholed = new WeakSet<Socket>();
  port = 0;

  private constructor(targetHost: string, targetPort: number) {
    this.#server = createServer((client) => {
      const upstream = new (client.constructor as typeof Socket)();
      upstream.connect(targetPort, targetHost);
      const pair: [Socket, Socket] = [client, upstream];
      this.#pairs.add(pair);
      const forward = (from: Socket, to: Socket) =>
        from.on("data", (chunk) => {
          if (!this.#blackholed.has(from)) to.write(chunk);
        });
      forward(client, upstream);
      forward(upstream, client);
      const close = () => {
        this.#pairs.delete(pair);
        client.destroy();
        upstream.destroy();
      };
      client.on("close", close).on("error", close);
      upstream.on("close", close).on("error", close);
    });
  }

  static async start(targetUrl: string): Promise<FaultProxy> {
    const url = new URL(targetUrl);
    const proxy = new FaultProxy(url.hostname, Number(url.port || 5432));
    await new Promise<void>((resolve) => proxy.#server.listen(0, "127.0.0.1", resolve));
    const address = proxy.#server.address();
    proxy.port = typeof address === "object" && address ? address.port : 0;
    return proxy;
  }

  /** The target URL with the proxy's address in place of the server's. */
  url(targetUrl: string): string {
    const url = new URL(targetUrl);
    url.hostname = "127.0.0.1";
    url.port = String(this.port);
    return url.toString();
  }

  /** Sends an RST to the client side of every proxied connection and drops the server side. */
  reset(): void {
    for (const [client, upstream] of this.#pairs) {
      client.resetAndDestroy();
      upstream.destroy();
    }
  }

  /**
   * A silent partition of the connections open now: their bytes vanish in both directions and
   * nothing is closed. New connections pass. `heal()` ends the partitioned ones (their streams lost
   * bytes, so they could never be used again), as a partition that outlives TCP's patience does.
   */
  blackhole(): void {
    for (const [client, upstream] of this.#pairs) {
      this.#blackholed.add(client);
      this.#blackholed.add(upstream);
    }
  }

  heal(): void {
    for (const [client, upstream] of this.#pairs) {
      if (!this.#blackholed.has(client)) continue;
      client.destroy();
      upstream.destroy();
    }
  }

  async stop(): Promise<void> {
    for (const [client, upstream] of this.#pairs) {
      client.destroy();
      upstream.destroy();
    }
    await new Promise((resolve) => this.#server.close(resolve));
  }
}
