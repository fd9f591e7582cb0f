// The labeling page of `rlhfkit label`. Model text is only ever set with textContent (never innerHTML): a response
// holding <script> or <img onerror=...> is shown as the text it is. Every answer carries an id drawn once per action
// and is re-sent with the same id until the server answers, so the page moves on only once the vote is on disk and
// a retried vote is written once.
"use strict";

(() => {
  const params = new URLSearchParams(location.search);
  const labeler = params.get("labeler") || "";
  const secret = params.get("key");
  const MARGIN_KEYS = ["q", "w", "e", "r", "t"];
  const $ = (id) => document.getElementById(id);

  let view = null; // the server's last answer: progress, margins and the task shown (null: all done)
  let busy = false; // an answer is on its way: keys wait
  let margin = null; // pairwise: the margin chosen for the next vote
  let rank = []; // ranking: the tokens typed, numbers (1..K) and "="

  // ---------------------------------------------------------------------------- talking to the server
  function apiUrl(path) {
    const url = new URL(path, location.origin);
    url.searchParams.set("labeler", labeler);
    if (secret) url.searchParams.set("key", secret);
    return url;
  }

  function newId() {
    const bytes = new Uint8Array(12);
    crypto.getRandomValues(bytes); // available without a secure context, unlike crypto.randomUUID
    return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  }

  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

  // Sends until the server answers. No answer or a 5xx (a server restarting) is retried with the same body;
  // a 4xx is an answer: its error is thrown.
  async function call(method, path, body) {
    let wait = 250;
    for (;;) {
      let resp = null;
      try {
        resp = await fetch(apiUrl(path), {
          method,
          cache: "no-store",
          headers: body ? { "Content-Type": "application/json" } : {},
          body: body ? JSON.stringify(body) : undefined,
        });
      } catch (err) {
        resp = null;
      }
      if (resp && resp.status < 500) {
        const data = await resp.json().catch(() => ({ error: `HTTP ${resp.status}` }));
        setSaving("");
        if (!resp.ok) throw new Error(data.error || `HTTP ${resp.status}`);
        return data;
      }
      setSaving(body ? "saving… the server does not answer, retrying" : "connecting…");
      await sleep(wait);
      wait = Math.min(wait * 2, 4000);
    }
  }

  async function act(path, body, note) {
    if (busy) return;
    busy = true;
    document.body.dataset.state = "busy";
    setSaving("saving…");
    try {
      const data = await call("POST", path, body);
      render(data);
      flash(note(data));
    } catch (err) {
      flash(err.message, true);
      render(await call("GET", "/api/task"));
    } finally {
      busy = false;
      document.body.dataset.state = view && view.task ? "ready" : "done";
    }
  }

  function vote(choice) {
    const t = view.task;
    const body = { vote_id: newId(), item_id: t.item_id, pair: t.pair, choice };
    if (margin !== null && choice !== "tie") body.margin = view.margins[margin];
    act("/api/vote", body, (d) => (d.duplicate ? "already saved" : "saved"));
  }

  function submitRanking() {
    const groups = rankGroups(true);
    if (!groups) {
      flash(`rank every response (or all but one), e.g. ${rankExample()}`, true);
      return;
    }
    act("/api/vote", { vote_id: newId(), item_id: view.task.item_id, ranking: groups }, (d) =>
      d.duplicate ? "already saved" : "saved",
    );
  }

  function undo() {
    act("/api/undo", { vote_id: newId() }, (d) =>
      d.undone === null ? "nothing to undo" : "vote undone: answer this one again",
    );
  }

  // ---------------------------------------------------------------------------- drawing
  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function setSaving(text) {
    $("saving").textContent = text;
  }

  let flashTimer = null;
  function flash(text, isError = false) {
    const box = $("message");
    box.textContent = text;
    box.classList.toggle("error", isError);
    box.hidden = !text;
    clearTimeout(flashTimer);
    if (text && !isError) flashTimer = setTimeout(() => (box.hidden = true), 1500);
  }

  function renderPrompt(prompt) {
    const box = $("prompt");
    box.replaceChildren();
    if (typeof prompt === "string") {
      box.append(el("div", "text", prompt));
      return;
    }
    for (const message of prompt) {
      const turn = el("div", `turn ${message.role === "user" ? "user" : "other"}`);
      turn.append(el("span", "role", message.role), el("div", "text", message.content));
      box.append(turn);
    }
  }

  function renderResponses(task, mode) {
    const box = $("responses");
    box.replaceChildren();
    box.className = `responses ${mode}`;
    task.responses.forEach((text, i) => {
      const card = el("article", "card response");
      const head = el("h2");
      if (mode === "pairwise") {
        head.append(el("kbd", "", String(i + 1)), ` ${i === 0 ? "Left" : "Right"}`);
      } else {
        const pick = el("button", "pick");
        pick.type = "button";
        pick.dataset.key = String(i + 1);
        pick.append(el("kbd", "", String(i + 1)), ` Response ${i + 1}`);
        head.append(pick, el("span", "place"));
      }
      card.append(head, el("div", "text", text));
      box.append(card);
    });
  }

  function render(data) {
    view = data;
    margin = null;
    rank = [];
    const t = data.task;
    const total = data.done + data.left;
    $("progress").textContent = `${data.labeler} · ${data.done} done · ${data.left} left`;
    $("progress").title = `${data.done} of ${total}`;
    $("task").hidden = !t;
    $("controls").hidden = !t;
    $("done").hidden = !!t;
    document.body.dataset.state = t ? "ready" : "done";
    document.body.dataset.item = t ? `${t.item_id}:${t.pair}` : "";
    document.body.dataset.done = String(data.done);
    if (!t) {
      $("done-text").textContent = `${data.labeler}: ${data.done} votes saved. Nothing is left for you.`;
      return;
    }
    $("pairwise-controls").hidden = data.mode !== "pairwise";
    $("ranking-controls").hidden = data.mode !== "ranking";
    renderPrompt(t.prompt);
    renderResponses(t, data.mode);
    drawMargin();
    drawRank();
    window.scrollTo(0, 0);
  }

  function drawMargin() {
    document.querySelectorAll(".margins button").forEach((button, i) => {
      button.classList.toggle("on", i === margin);
    });
  }

  // ---------------------------------------------------------------------------- ranking input
  // The tokens as groups of shown positions, best first: "3 1=2 4" -> [[3], [1, 2], [4]]. complete: with every
  // response named (the last one may be left out: it is last), else null.
  function rankGroups(complete) {
    const k = view.task.responses.length;
    const groups = [];
    let joinNext = false;
    for (const token of rank) {
      if (token === "=") joinNext = true;
      else if (joinNext && groups.length) {
        groups[groups.length - 1].push(token);
        joinNext = false;
      } else groups.push([token]);
    }
    if (!complete) return groups;
    const named = rank.filter((x) => x !== "=");
    if (joinNext || named.length < k - 1) return null;
    if (named.length === k - 1) {
      for (let n = 1; n <= k; n++) if (!named.includes(n)) groups.push([n]);
    }
    return groups;
  }

  function rankExample() {
    return view.task.responses.length > 2 ? "2 1=3: 2 best, then 1 and 3 tied" : "2 1: 2 is better";
  }

  function drawRank() {
    if (view.mode !== "ranking") return;
    const groups = rankGroups(false);
    $("rank-text").textContent = rank.length
      ? groups.map((g) => g.join(" = ")).join("  >  ") + (rank[rank.length - 1] === "=" ? " = …" : "")
      : "…";
    const place = {};
    groups.forEach((g, i) => g.forEach((n) => (place[n] = i + 1)));
    document.querySelectorAll("#responses .response").forEach((card, i) => {
      const p = place[i + 1];
      card.querySelector(".place").textContent = p ? `#${p}${groups[p - 1].length > 1 ? " (tie)" : ""}` : "";
      card.classList.toggle("ranked", !!p);
    });
    $("submit-ranking").disabled = rankGroups(true) === null;
  }

  function rankKey(key) {
    const k = view.task.responses.length;
    const n = Number(key);
    if (Number.isInteger(n) && n >= 1 && n <= k) {
      if (!rank.includes(n)) rank.push(n);
    } else if (key === "=") {
      if (rank.length && rank[rank.length - 1] !== "=") rank.push("=");
    } else if (key === "Backspace") rank.pop();
    else if (key === "Escape") rank = [];
    else if (key === "Enter") return submitRanking();
    else return false;
    drawRank();
    return true;
  }

  // ---------------------------------------------------------------------------- keys and buttons
  function press(key) {
    if (busy || !view) return false;
    if (key === "u") return undo(), true;
    if (!view.task) return false;
    if (view.mode === "ranking") return rankKey(key) !== false;
    if (key === "1") return vote("left"), true;
    if (key === "2") return vote("right"), true;
    if (key === "0") return vote("tie"), true;
    const m = MARGIN_KEYS.indexOf(key);
    if (m >= 0) {
      margin = margin === m ? null : m;
      drawMargin();
      return true;
    }
    return false;
  }

  document.addEventListener("keydown", (event) => {
    if (event.ctrlKey || event.metaKey || event.altKey || event.repeat) return;
    const key = event.key.length === 1 ? event.key.toLowerCase() : event.key;
    if (press(key)) event.preventDefault();
  });

  document.addEventListener("click", (event) => {
    const button = event.target.closest("button[data-key]");
    if (!button) return;
    button.blur(); // Enter must not click it again
    press(button.dataset.key);
  });

  async function start() {
    if (!labeler) {
      document.body.dataset.state = "nolabeler";
      flash("Open this page with your name: /?labeler=YOUR_NAME (the link you were given).", true);
      return;
    }
    try {
      render(await call("GET", "/api/task"));
    } catch (err) {
      document.body.dataset.state = "error";
      flash(err.message, true);
    }
  }

  start();
})();
