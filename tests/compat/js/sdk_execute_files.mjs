import { client, report } from "./lib.mjs";
await report(() => client().execute({
  language: "Python",
  version: "3",
  files: [
    { name: "helper.py", code: "GREETING = 'from a second file'\n", entrypoint: false },
    { name: "main.py", code: "import helper\nprint(helper.GREETING)\n", entrypoint: true },
  ],
}));
