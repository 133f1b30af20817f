// Starts a throwaway PostgreSQL and prints its port; the server.test.ts kills this process to orphan it.
import { startThrowawayPostgres } from "../../tools/throwaway-postgres.js";

const server = await startThrowawayPostgres();
console.log(server.port);
