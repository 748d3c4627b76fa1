// piston-client (npm), pointed at our server; it sends no token header.
import piston from "piston-client";
const client = piston({ server: process.env.PESTO_URL });
console.log(JSON.stringify(await client.runtimes()));
