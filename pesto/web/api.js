// The API documentation page: the server's own OpenAPI document
// (/schema/openapi.json) rendered as text, with nothing from other sites.
"use strict";

(function () {
  const METHODS = ["get", "post", "put", "patch", "delete"];
  const MAX_DEPTH = 5;       // schemas refer to each other; stop unfolding here

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = String(text);
    return node;
  }

  document.getElementById("example").textContent =
    "curl -s " + location.origin + "/api/execute \\\n" +
    "  -H 'X-Pesto-Token: pesto_...' -H 'Content-Type: application/json' \\\n" +
    "  -d '{\"language\": \"python\", \"code\": \"print(input())\", \"stdin\": \"hello\"}'";

  function resolve(doc, schema) {
    const seen = [];
    while (schema && schema.$ref && seen.length < MAX_DEPTH) {
      seen.push(schema.$ref);
      const name = schema.$ref.split("/").pop();
      schema = Object.assign({ title: name }, (doc.components.schemas || {})[name]);
    }
    return schema || {};
  }

  function typeOf(doc, schema) {
    const s = resolve(doc, schema);
    if (Array.isArray(s.type)) return s.type.join(" | ");
    if (s.type === "array") return "array of " + typeOf(doc, s.items || {});
    if (s.oneOf || s.anyOf) return (s.oneOf || s.anyOf).map((x) => typeOf(doc, x)).join(" | ");
    if (s.enum) return s.enum.map((v) => JSON.stringify(v)).join(" | ");
    return (s.title && s.type === "object" ? s.title : s.type) || "any";
  }

  // A schema as a nested list of fields: name, type, required, description.
  function fields(doc, schema, depth) {
    let s = resolve(doc, schema);
    if (s.type === "array" && s.items) s = resolve(doc, s.items);
    const oneOf = s.oneOf || s.anyOf;
    if (oneOf) {
      const object = oneOf.map((x) => resolve(doc, x)).find((x) => x.properties);
      if (object) s = object;
    }
    if (!s.properties || depth > MAX_DEPTH) return null;
    const required = new Set(s.required || []);
    const list = el("ul", "fields");
    for (const [name, prop] of Object.entries(s.properties)) {
      const item = el("li");
      item.append(el("code", "field", name), el("span", "type", " " + typeOf(doc, prop)));
      if (required.has(name)) item.append(el("span", "req", " required"));
      const p = resolve(doc, prop);
      const notes = [p.description, p.maxLength && "at most " + p.maxLength + " characters",
        p.maxItems && "at most " + p.maxItems + " items"].filter(Boolean);
      if (notes.length) item.append(el("span", "desc", " — " + notes.join("; ")));
      const inner = fields(doc, prop, depth + 1);
      if (inner) item.append(inner);
      list.append(item);
    }
    return list;
  }

  function bodySchema(content) {
    const json = content && (content["application/json"] || Object.values(content)[0]);
    return json && json.schema;
  }

  function operation(doc, path, method, op) {
    const box = el("section", "route");
    box.id = (method + path).replace(/[^a-z0-9]+/gi, "-");
    const head = el("h3");
    head.append(el("span", "method method-" + method, method.toUpperCase()), el("code", "path", " " + path));
    if (op.security && op.security.length) head.append(el("span", "needs-token", "token"));
    box.append(head);
    if (op.summary) box.append(el("p", "summary-line", op.summary));
    if (op.description) box.append(el("p", "", op.description));
    const params = (op.parameters || []).filter((p) => p.in !== "header");
    if (params.length) {
      box.append(el("h4", "", "Parameters"));
      const ul = el("ul", "fields");
      for (const p of params) {
        const li = el("li");
        li.append(el("code", "field", p.name), el("span", "type", " " + typeOf(doc, p.schema || {}) + ", in " + p.in));
        ul.append(li);
      }
      box.append(ul);
    }
    const request = op.requestBody && bodySchema(op.requestBody.content);
    if (request) {
      box.append(el("h4", "", "Request body"));
      if (request.description) box.append(el("p", "", request.description));
      const list = fields(doc, request, 0);
      if (list) box.append(list);
    }
    box.append(el("h4", "", "Responses"));
    const responses = el("ul", "responses");
    for (const [status, response] of Object.entries(op.responses || {})) {
      const li = el("li");
      li.append(el("code", "status-code", status), el("span", "desc", " " + (response.description || "")));
      const schema = bodySchema(response.content);
      if (schema && Number(status) < 400) {
        const list = fields(doc, schema, 0);
        if (list) li.append(list);
      }
      responses.append(li);
    }
    box.append(responses);
    return box;
  }

  async function load() {
    const routes = document.getElementById("routes");
    let doc;
    try {
      const response = await fetch("/schema/openapi.json", { credentials: "omit" });
      if (!response.ok) throw new Error("the server answered " + response.status);
      doc = await response.json();
    } catch (err) {
      routes.replaceChildren(el("p", "error", "Could not load the OpenAPI document: " + err.message));
      return;
    }
    doc.components = doc.components || {};
    routes.replaceChildren();
    for (const [path, item] of Object.entries(doc.paths || {})) {
      for (const method of METHODS) {
        if (item[method]) routes.append(operation(doc, path, method, item[method]));
      }
    }
  }

  load();
})();
