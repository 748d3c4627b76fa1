// The page at /: playground, token box, token request and claim.
// Everything a server or a program sends is put on the page with
// textContent, never as HTML. The token lives in localStorage only.
"use strict";

(function () {
  const TOKEN_KEY = "pesto.token";
  const INDENT = "    ";
  const $ = (id) => document.getElementById(id);

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = String(text);
    return node;
  }

  async function api(path, options) {
    let response;
    try {
      response = await fetch(path, options);
    } catch (err) {
      return { ok: false, status: 0, body: { code: "NETWORK", message: "the server did not answer: " + err.message } };
    }
    let body = null;
    try { body = await response.json(); } catch (err) { body = null; }
    if (!response.ok && (!body || typeof body.message !== "string")) {
      body = { code: "HTTP_" + response.status, message: "the server answered " + response.status };
    }
    return { ok: response.ok, status: response.status, body: body };
  }

  function postJSON(path, payload, headers) {
    return api(path, {
      method: "POST",
      headers: Object.assign({ "Content-Type": "application/json" }, headers || {}),
      body: JSON.stringify(payload),
      credentials: "omit",
    });
  }

  function showError(box, body) {
    box.replaceChildren();
    const p = el("p", "error");
    p.setAttribute("role", "alert");
    const details = Array.isArray(body.details) && body.details.length;
    // With details (one line per bad field) the list says it all.
    p.append(el("strong", "", body.code),
      document.createTextNode(details ? ": please fix:" : ": " + body.message));
    box.append(p);
    if (details) {
      const ul = el("ul", "error");
      // "$.email: not an email address" reads as "email: not an email address".
      for (const d of body.details) ul.append(el("li", "", String(d).replace(/^\$\./, "")));
      box.append(ul);
    }
  }

  // --- token --------------------------------------------------------------

  const tokenInput = $("token");
  const tokenState = $("token-state");

  function storedToken() {
    try { return localStorage.getItem(TOKEN_KEY) || ""; } catch (err) { return ""; }
  }

  function showTokenState() {
    const t = storedToken();
    tokenState.textContent = t
      ? "A token is remembered in this browser."
      : "No token yet: paste one, or request one below.";
    tokenInput.value = t;
  }

  function remember(token) {
    try {
      localStorage.setItem(TOKEN_KEY, token);
    } catch (err) {
      tokenState.textContent = "This browser does not let the page remember the token.";
      return;
    }
    showTokenState();
  }

  // Pasted once: a token typed or pasted here is remembered when the field is left.
  function rememberInput() {
    const t = tokenInput.value.trim();
    if (t && t !== storedToken()) remember(t);
  }
  $("token-save").addEventListener("click", rememberInput);
  tokenInput.addEventListener("change", rememberInput);
  $("token-forget").addEventListener("click", () => {
    try { localStorage.removeItem(TOKEN_KEY); } catch (err) { /* nothing stored */ }
    showTokenState();
  });
  showTokenState();

  // --- editor: a textarea with line numbers and Tab indents ----------------

  const code = $("code");
  const gutter = $("gutter");
  let escaped = false;     // Esc was pressed: the next Tab leaves the editor

  function renderGutter() {
    const lines = code.value.split("\n").length;
    let text = "";
    for (let i = 1; i <= lines; i++) text += i + "\n";
    gutter.textContent = text;
    gutter.scrollTop = code.scrollTop;
  }

  function replaceRange(start, end, text, selStart, selEnd) {
    code.setRangeText(text, start, end, "end");
    code.setSelectionRange(selStart, selEnd);
    code.dispatchEvent(new Event("input"));
  }

  function indent(outdent) {
    const value = code.value;
    const start = code.selectionStart;
    const end = code.selectionEnd;
    if (!outdent && start === end) {          // plain Tab: insert spaces
      replaceRange(start, end, INDENT, start + INDENT.length, start + INDENT.length);
      return;
    }
    const lineStart = value.lastIndexOf("\n", start - 1) + 1;
    const block = value.slice(lineStart, end);
    const lines = block.split("\n");
    let firstDelta = 0;
    const changed = lines.map((line, i) => {
      if (!outdent) { if (i === 0) firstDelta = INDENT.length; return INDENT + line; }
      const m = line.match(/^( {1,4}|\t)/);
      const cut = m ? m[0].length : 0;
      if (i === 0) firstDelta = -cut;
      return line.slice(cut);
    }).join("\n");
    replaceRange(lineStart, end, changed,
      Math.max(lineStart, start + firstDelta), lineStart + changed.length);
  }

  code.addEventListener("keydown", (event) => {
    if (event.key === "Escape") { escaped = true; return; }
    if (event.key === "Tab" && !escaped && !event.ctrlKey && !event.altKey && !event.metaKey) {
      event.preventDefault();
      indent(event.shiftKey);
      return;
    }
    if (event.key === "Enter" && !event.ctrlKey && !event.metaKey) {
      // Keep the indentation of the line above.
      const start = code.selectionStart;
      const lineStart = code.value.lastIndexOf("\n", start - 1) + 1;
      const lead = code.value.slice(lineStart, start).match(/^[ \t]*/)[0];
      if (lead) {
        event.preventDefault();
        replaceRange(start, code.selectionEnd, "\n" + lead,
          start + 1 + lead.length, start + 1 + lead.length);
      }
    }
    escaped = false;
  });
  code.addEventListener("blur", () => { escaped = false; });
  code.addEventListener("input", renderGutter);
  code.addEventListener("scroll", () => { gutter.scrollTop = code.scrollTop; });

  // --- runtimes and samples ------------------------------------------------

  const languageSelect = $("language");
  const versionSelect = $("version");
  const versions = new Map();     // language -> its versions, newest first
  const samples = new Map();      // "language version" -> code
  let sampleShown = "";           // the sample now in the editor, unchanged

  function key(language, version) { return language + " " + version; }

  function fillVersions() {
    versionSelect.replaceChildren();
    for (const v of versions.get(languageSelect.value) || []) {
      const option = el("option", "", v);
      option.value = v;
      versionSelect.append(option);
    }
  }

  function fillSample() {
    if (!languageSelect.value || !versionSelect.value) return;
    if (code.value !== "" && code.value !== sampleShown) return;   // never overwrite the user's code
    const sample = samples.get(key(languageSelect.value, versionSelect.value)) || "";
    code.value = sample;
    sampleShown = sample;
    renderGutter();
  }

  async function loadRuntimes() {
    const list = $("runtimes");
    const [runtimes, pageData] = await Promise.all([api("/api/runtimes"), api("/web/page.json")]);
    if (pageData.ok) {
      for (const s of pageData.body.samples) samples.set(key(s.language, s.version), s.code);
      showRequestMode(pageData.body.tokenRequests);
    }
    list.replaceChildren();
    if (!runtimes.ok) {
      list.append(el("li", "error", "Could not load the runtimes: " + runtimes.body.message));
      return;
    }
    const rows = runtimes.body.runtime.slice().sort((a, b) =>
      a.language.localeCompare(b.language) || b.version.localeCompare(a.version, undefined, { numeric: true }));
    for (const r of rows) {
      const li = el("li");
      li.append(el("span", "lang", r.language), el("span", "ver", r.version));
      if (r.compiled) li.append(el("span", "tag", "compiled"));
      list.append(li);
      if (!versions.has(r.language)) {
        versions.set(r.language, []);
        const option = el("option", "", r.language);
        option.value = r.language;
        languageSelect.append(option);
      }
      versions.get(r.language).push(r.version);
    }
    if (!rows.length) list.append(el("li", "", "No runtime is installed on this server."));
    const python = rows.find((r) => r.language.toLowerCase() === "python");
    if (python) languageSelect.value = python.language;
    fillVersions();
    fillSample();
  }

  languageSelect.addEventListener("change", () => { fillVersions(); fillSample(); });
  versionSelect.addEventListener("change", fillSample);

  // --- run -------------------------------------------------------------------

  const STATUS_TEXT = {
    ok: "ok",
    error: "failed (non-zero exit)",
    signal: "killed by a signal",
    timeout: "timed out",
    memory: "out of memory",
    output: "output cut: over the limit",
    skipped: "skipped",
  };

  function kib(bytes) { return (bytes / 1024).toFixed(0) + " KiB"; }

  function stageBlock(title, stage) {
    const box = el("section", "stage " + (stage.status === "ok" ? "stage-ok" : "stage-bad"));
    box.dataset.status = stage.status;
    const head = el("h3", "", title + ": ");
    head.append(el("span", "status status-" + stage.status, STATUS_TEXT[stage.status] || stage.status));
    box.append(head);
    const facts = el("dl", "facts");
    const add = (name, value) => { facts.append(el("dt", "", name), el("dd", "", value)); };
    add("status", stage.status);
    add("exit code", stage.exitCode);
    if (stage.signal) add("signal", stage.signal);
    add("wall time", stage.wallTime + " ms");
    add("cpu time", stage.cpuTime + " ms");
    add("memory", kib(stage.memory));
    box.append(facts);
    if (stage.truncated) box.append(el("p", "warn", "Output was cut at the server's limit."));
    for (const [name, text] of [["stdout", stage.stdout], ["stderr", stage.stderr]]) {
      if (text === "" && name === "stderr") continue;
      box.append(el("h4", "", name));
      box.append(el("pre", "out out-" + name, text === "" ? "(empty)" : text));
    }
    return box;
  }

  function showResult(result) {
    const box = $("result");
    box.replaceChildren();
    const summary = el("p", "summary", "Ran " + result.language + " " + result.version + ".");
    box.append(summary);
    if (result.compile && result.compile.status !== "skipped") box.append(stageBlock("Compile", result.compile));
    if (result.runtime && result.runtime.status !== "skipped") box.append(stageBlock("Run", result.runtime));
    else if (result.runtime) box.append(el("p", "warn", "The run stage was skipped: the compile stage failed."));
  }

  let running = false;

  async function run() {
    if (running) return;
    const box = $("result");
    const language = languageSelect.value;
    const version = versionSelect.value;
    rememberInput();
    const token = tokenInput.value.trim() || storedToken();
    if (!language || !version) { showError(box, { code: "NO_RUNTIME", message: "pick a language first" }); return; }
    if (!token) {
      showError(box, { code: "TOKEN_MISSING", message: "paste your API token above, or request one below" });
      return;
    }
    const argText = $("args").value.replace(/\n$/, "");   // a last newline adds no argument
    const args = argText === "" ? [] : argText.split("\n");
    const body = {
      language: language,
      version: version,
      code: code.value,
      stdin: $("stdin").value,
      args: args,
    };
    running = true;
    $("run").disabled = true;
    box.replaceChildren(el("p", "summary", "Running…"));
    try {
      const answer = await postJSON("/api/execute", body, { "X-Pesto-Token": token });
      if (answer.ok) showResult(answer.body);
      else showError(box, answer.body);
    } finally {
      running = false;
      $("run").disabled = false;
    }
  }

  $("run-form").addEventListener("submit", (event) => { event.preventDefault(); run(); });
  document.addEventListener("keydown", (event) => {
    // Ctrl+Enter runs, except while writing a token request.
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey) &&
        !$("request").contains(document.activeElement)) {
      event.preventDefault();
      run();
    }
  });

  // --- token request and claim ---------------------------------------------

  function showRequestMode(mode) {
    const note = $("request-mode");
    if (mode === "off") {
      $("request-form").hidden = true;
      $("request-intro").hidden = true;
      note.textContent = "This server does not take token requests: ask its operator for a token.";
    } else if (mode === "auto") {
      note.textContent = "This server gives you a trial token at once.";
    }
  }

  function showSecret(box, intro, label, value, extra) {
    box.replaceChildren();
    box.append(el("p", "", intro));
    const row = el("div", "secret");
    row.append(el("span", "label", label));
    const shown = el("code", "secret-value", value);
    shown.tabIndex = 0;        // reachable by keyboard, to select and copy
    row.append(shown);
    box.append(row);
    if (extra) box.append(extra);
  }

  $("request-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const box = $("request-result");
    const send = $("req-send");
    send.disabled = true;
    try {
      const answer = await postJSON("/api/token-requests", {
        name: $("req-name").value, email: $("req-email").value, purpose: $("req-purpose").value,
      });
      if (!answer.ok) { showError(box, answer.body); return; }
      $("request-form").reset();
      if (answer.body.token) {
        showToken(box, answer.body.token);
        return;
      }
      showSecret(box, "Request sent. Keep this claim code: it is shown only once. " +
        "When the operator approves your request, paste it below to get your token.",
        "Claim code", answer.body.claimCode);
      $("claim-code").value = answer.body.claimCode;
    } finally {
      send.disabled = false;
    }
  });

  function showToken(box, token) {
    const use = el("button", "", "Use this token here");
    use.type = "button";
    use.id = "token-use";
    use.addEventListener("click", () => {
      remember(token);
      use.disabled = true;
      use.textContent = "Remembered";
    });
    showSecret(box, "Your token is ready. It is shown only once: copy it now. " +
      "Send it as the X-Pesto-Token header.", "Token", token, use);
  }

  $("claim-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const box = $("claim-result");
    const answer = await postJSON("/api/token-requests/claim", { claimCode: $("claim-code").value.trim() });
    if (!answer.ok) { showError(box, answer.body); return; }
    const b = answer.body;
    if (b.status === "pending") {
      box.replaceChildren(el("p", "", "Your request is still waiting for the operator. Try again later."));
    } else if (b.status === "rejected") {
      box.replaceChildren(el("p", "error", "Your request was declined" + (b.reason ? ": " + b.reason : ".")));
    } else if (b.token) {
      showToken(box, b.token);
    }
  });

  loadRuntimes();
  renderGutter();
})();
