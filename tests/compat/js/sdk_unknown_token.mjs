import { client, report } from "./lib.mjs";
await report(() => client("pesto_not_a_real_token").execute({ language: "Python", version: "latest", code: "print(1)" }));
