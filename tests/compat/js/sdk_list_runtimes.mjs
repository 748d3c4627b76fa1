import { client, report } from "./lib.mjs";
await report(() => client().listRuntimes());
