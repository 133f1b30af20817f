import type { TestProject } from "vitest/node";
import { startThrowawayPostgres } from "../../tools/throwaway-postgres.js";

declare module "vitest" {
  export interface ProvidedContext {
    databaseUrl: string;
  }
}

/** Uses DATABASE_URL when set; otherwise starts a throwaway PostgreSQL for this run and removes it after. */
export default async function setup(project: TestProject) {
  const given = process.env.DATABASE_URL;
  if (given) {
    project.provide("databaseUrl", given);
    return;
  }
  const server = await startThrowawayPostgres();
  project.provide("databaseUrl", server.url);
  return () => server.stop();
}
