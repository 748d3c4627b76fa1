// client.execute(language, code[, config]) exactly as piston-client's README
// shows: the client fills every field itself (args ["1","2","3"],
// compile_memory_limit -1, ...), sends JSON as text/plain and no token.
import piston from "piston-client";
const client = piston({ server: process.env.PESTO_URL });
const config = process.argv[4] ? JSON.parse(process.argv[4]) : undefined;
const result = config === undefined
  ? await client.execute(process.argv[2], process.argv[3])
  : await client.execute(process.argv[2], process.argv[3], config);
console.log(JSON.stringify(result));
