// Two requests on a token allowed one per minute: any 429 that is not the
// monthly quota is the SDK's ServerRateLimitedError.
import { client, report } from "./lib.mjs";
const pesto = client(process.env.PESTO_RATE_TOKEN);
await pesto.execute({ language: "Python", version: "latest", code: "print(1)" });
await report(() => pesto.execute({ language: "Python", version: "latest", code: "print(2)" }));
