// As the SDK's own integration test sends it: empty language and version.
import { client, report } from "./lib.mjs";
await report(() => client().execute({ code: "print('asdf')", language: "", version: "" }));
