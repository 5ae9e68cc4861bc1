// The labelling page: clicks and keys post labels; the pending list refreshes itself.
"use strict";
const LikesPage = (() => {
  const token = document.querySelector('meta[name="label-token"]').content;
  let focus = 0;

  async function api(path, body) {
    const opts = body === undefined ? {} : {
      method: "POST",
      headers: { "Content-Type": "application/json", "X-Label-Token": token },
      body: JSON.stringify(body),
    };
    opts.headers = Object.assign({ Accept: "application/json" }, opts.headers || {});
    const resp = await fetch(path, opts);
    const data = await resp.json().catch(() => ({ error: resp.statusText }));
    if (!resp.ok) throw new Error(data.error || resp.statusText);
    return data;
  }

  function say(text) { document.getElementById("message").textContent = text || ""; }
  function cells() { return Array.from(document.querySelectorAll(".cell")); }
  function groupId() { return document.getElementById("group").dataset.group; }

  function setFocus(i) {
    const cs = cells();
    if (!cs.length) return;
    focus = Math.max(0, Math.min(cs.length - 1, i));
    cs.forEach((c, k) => c.classList.toggle("focus", k === focus));
  }

  function mark(cell, label) {
    cell.classList.toggle("liked", label === "like");
    cell.classList.toggle("disliked", label === "dislike");
    cell.dataset.label = label || "";
  }

  function progress() {
    const cs = cells();
    const done = cs.filter((c) => c.classList.contains("liked") || c.classList.contains("disliked")).length;
    document.getElementById("progress").textContent = `${done} of ${cs.length} labelled`;
    document.getElementById("group").dataset.complete = done === cs.length ? "1" : "0";
    return done === cs.length;
  }

  async function label(index, value) {
    const cell = cells()[index];
    if (!cell) return;
    const id = (self.crypto && crypto.randomUUID) ? crypto.randomUUID() : String(Math.random()).slice(2) + Date.now();
    try {
      await api("/api/label", { image_id: cell.dataset.image, group_id: groupId(), label: value, client_id: id });
      mark(cell, value);
      say("");
      const next = cells().findIndex((c, k) => k > index && !c.classList.contains("liked") && !c.classList.contains("disliked"));
      setFocus(next >= 0 ? next : index);
      progress();
      refreshPending();
    } catch (err) { say(err.message); }
  }

  async function undo() {
    try {
      const r = await api("/api/undo", { group_id: groupId() });
      if (!r.undone) { say("nothing to undo in this group"); return; }
      const k = cells().findIndex((c) => c.dataset.image === r.undone);
      if (k >= 0) { mark(cells()[k], null); setFocus(k); }
      say("");
      progress();
      refreshPending();
    } catch (err) { say(err.message); }
  }

  async function next() {
    try {
      const r = await api("/api/pending");
      const other = r.pending.find((p) => p.id !== groupId());
      window.location.href = other ? `/group/${other.id}` : "/";
    } catch (err) { say(err.message); }
  }

  async function refreshPending() {
    let r;
    try { r = await api("/api/pending"); } catch (err) { return; }
    const list = document.getElementById("pending-list");
    if (!list) return r;
    list.replaceChildren(...r.pending.map((p) => {
      const li = document.createElement("li");
      if (p.id === groupId()) li.className = "current";
      const a = document.createElement("a");
      a.href = `/group/${p.id}`;
      a.textContent = p.prompt;
      const small = document.createElement("small");
      small.textContent = ` ${p.labelled}/${p.images}`;
      li.append(a, small);
      return li;
    }));
    document.getElementById("pending-count").textContent = r.total;
    return r;
  }

  function group() {
    cells().forEach((cell, k) => {
      cell.addEventListener("click", (ev) => {
        const b = ev.target.closest("button");
        if (b) label(k, b.dataset.label); else setFocus(k);
      });
    });
    document.getElementById("undo").addEventListener("click", undo);
    document.getElementById("next").addEventListener("click", next);
    document.addEventListener("keydown", (ev) => {
      if (ev.target.tagName === "INPUT" || ev.altKey || ev.metaKey) return;
      const key = ev.key.toLowerCase();
      if (ev.ctrlKey && key !== "z") return;
      const acts = {
        l: () => label(focus, "like"), d: () => label(focus, "dislike"),
        arrowright: () => setFocus(focus + 1), arrowleft: () => setFocus(focus - 1),
        u: undo, z: undo, n: next, enter: next,
      };
      if (acts[key]) { ev.preventDefault(); acts[key](); }
    });
    const first = cells().findIndex((c) => !c.classList.contains("liked") && !c.classList.contains("disliked"));
    setFocus(first >= 0 ? first : 0);
    progress();
    setInterval(refreshPending, 2000);
  }

  function waitForWork() {
    setInterval(async () => {
      const r = await refreshPending();
      if (r && r.pending.length) window.location.href = `/group/${r.pending[0].id}`;
    }, 1000);
  }

  return { group, waitForWork };
})();
