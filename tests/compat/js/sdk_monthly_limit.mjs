// Two executions on a token allowed one per month: the second is refused.
import { client, report } from "./lib.mjs";
const pesto = client(process.env.PESTO_MONTHLY_TOKEN);
await pesto.execute({ language: "Python", version: "latest", code: "print(1)" });
await report(() => pesto.execute({ language: "Python", version: "latest", code: "print(2)" }));
