import { client, report } from "./lib.mjs";
await report(() => client().execute({ language: process.argv[2], version: process.argv[3], code: "x" }));
