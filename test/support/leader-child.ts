// A process that leads an election until it is killed (for the leader-election test).
import pg from "pg";
import { createLocker } from "pglock";

const pool = new pg.Pool({ connectionString: process.env.DATABASE_URL });
const election = createLocker(pool).leaderElection(process.argv[2] as string);
election.on("elected", () => console.log("elected"));
await election.run((signal) => new Promise<void>((resolve) => signal.addEventListener("abort", () => resolve())));
