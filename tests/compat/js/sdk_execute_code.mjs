// The request the SDK's README shows, with the language spelled as its users do.
import { client, report } from "./lib.mjs";
await report(() => client().execute({
  language: process.argv[2],
  version: "latest",
  code: process.argv[3],
}));
