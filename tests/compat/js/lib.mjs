// Shared by the check scripts: build the published SDK's client from the
// environment the pytest fixture sets, and print what a call gave back or
// threw as one JSON line (the Python test asserts on it).
import { PestoClient } from "@teknologi-umum/pesto";

export function client(token = process.env.PESTO_TOKEN) {
  return new PestoClient({ token, baseURL: new URL(process.env.PESTO_URL) });
}

export async function report(call) {
  try {
    const value = await call();
    console.log(JSON.stringify({ ok: true, value }));
  } catch (error) {
    // The SDK does not export its error classes: the class name is what a
    // user's `instanceof` would test.
    console.log(JSON.stringify({ ok: false, error: error.constructor.name, message: error.message }));
  }
}
