import { client, report } from "./lib.mjs";
await report(() => client(process.env.PESTO_REVOKED_TOKEN).execute({ language: "Python", version: "latest", code: "print(1)" }));
