import { client, report } from "./lib.mjs";
await report(() => client().execute({ language: "", version: "latest", code: "print(1)" }));
