// The SDK refuses an empty token itself; a blank one reaches the server as an
// empty X-Pesto-Token header (HTTP trims header values).
import { client, report } from "./lib.mjs";
await report(() => client(" ").execute({ language: "Python", version: "latest", code: "print(1)" }));
