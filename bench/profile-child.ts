// The throughput loop of scenario 3 (64 callers) alone, for `node --cpu-prof` (bench/profile.ts).
import { lockerLoops } from "./throughput.js";

const run = await lockerLoops(process.env.DATABASE_URL as string, 64, Number(process.env.PROFILE_MS ?? 3000));
console.log(JSON.stringify(run));
