// The status page's live updates: poll /api/view and fill the server's markup.
// Values only ever reach the page as text (textContent) or as attributes from a
// short list, never as HTML: every name and message comes from whoever drops files.
"use strict";

(() => {
  const POLL_MS = 2000;
  const ATTRIBUTES = new Set([
    "src", "poster", "action", "href", "id", "title", "aria-label", "datetime", "max",
    "value", "data-state", "data-health",
  ]);
  const URL_ATTRIBUTES = new Set(["src", "poster", "action", "href"]);

  const present = (value) => value !== undefined && value !== null && value !== "";

  // Our own URLs only ("/jobs/...", "#job-..."): never javascript:, never another host.
  const ownUrl = (text) => text.startsWith("#") || (text.startsWith("/") && !text.startsWith("//"));

  // A time the server wrote in UTC, in the viewer's time zone ("" when unreadable).
  function localTime(iso) {
    if (!present(iso)) return "";
    const date = new Date(iso);
    if (Number.isNaN(date.getTime())) return "";
    return date.toLocaleString(undefined, {
      year: "numeric", month: "short", day: "numeric",
      hour: "2-digit", minute: "2-digit", second: "2-digit", timeZoneName: "short",
    });
  }

  // <time data-local>: the text; <time data-local-title>: the title.
  function localize(el) {
    const iso = el.getAttribute("datetime");
    const local = localTime(iso);
    if (!local) return;
    if (el.dataset.local !== undefined && el.textContent !== local) el.textContent = local;
    if (el.dataset.localTitle !== undefined && el.title !== local) el.title = local;
  }

  function setAttribute(el, name, value) {
    if (!ATTRIBUTES.has(name)) return;
    if (!present(value)) {
      if (el.hasAttribute(name)) el.removeAttribute(name);
      return;
    }
    const text = String(value);
    if (URL_ATTRIBUTES.has(name) && !ownUrl(text)) return;
    // Setting a media element's src again, even to the same value, reloads it.
    if (el.getAttribute(name) !== text) el.setAttribute(name, text);
  }

  function bind(root, data) {
    const nodes = [root, ...root.querySelectorAll("[data-bind],[data-attr],[data-show]")];
    for (const el of nodes) {
      const field = el.dataset.bind;
      // A local time's text is its datetime, converted below (not the server's UTC text).
      if (field !== undefined && el.dataset.local === undefined) {
        const text = present(data[field]) ? String(data[field]) : "";
        if (el.textContent !== text) el.textContent = text;
      }
      if (el.dataset.attr !== undefined) {
        for (const pair of el.dataset.attr.split(/\s+/)) {
          const [name, key] = pair.split(":");
          if (name && key) setAttribute(el, name, data[key]);
        }
      }
      if (el.dataset.show !== undefined) el.hidden = !present(data[el.dataset.show]);
      if (el.dataset.local !== undefined || el.dataset.localTitle !== undefined) localize(el);
    }
  }

  // Rows keep their element while their key stays (a playing video keeps playing);
  // an element only moves when the order changes.
  function renderList(container, rows) {
    const template = document.getElementById(container.dataset.template);
    const keyField = container.dataset.key;
    const existing = new Map();
    for (const child of container.children) existing.set(child.dataset.key, child);
    let previous = null;
    for (const row of rows) {
      const key = String(row[keyField]);
      let el = existing.get(key);
      if (el) {
        existing.delete(key);
      } else {
        el = template.content.firstElementChild.cloneNode(true);
        el.dataset.key = key;
        // No image, no element (a text drop's card has no thumbnail at all).
        for (const optional of el.querySelectorAll("[data-if]")) {
          if (!present(row[optional.dataset.if])) optional.remove();
        }
      }
      bind(el, row);
      const slot = previous ? previous.nextElementSibling : container.firstElementChild;
      if (el !== slot) container.insertBefore(el, slot);
      previous = el;
    }
    for (const el of existing.values()) el.remove();
  }

  function render(view) {
    bind(document.getElementById("live"), view);
    bind(document.getElementById("store-problem"), view);
    for (const container of document.querySelectorAll("[data-list]")) {
      renderList(container, view[container.dataset.list] || []);
    }
    for (const el of document.querySelectorAll("[data-empty-for]")) {
      el.hidden = (view[el.dataset.emptyFor] || []).length > 0;
    }
    for (const el of document.querySelectorAll("[data-section-for]")) {
      el.hidden = (view[el.dataset.sectionFor] || []).length === 0;
    }
    for (const el of document.querySelectorAll("[data-object]")) {
      const value = view[el.dataset.object];
      el.hidden = !value;
      if (value) bind(el, value);
    }
  }

  const problem = () => document.getElementById("live-problem");

  async function poll() {
    try {
      const response = await fetch("/api/view", {
        credentials: "same-origin",
        cache: "no-store",
        headers: { Accept: "application/json" },
      });
      if (response.status === 401) {
        problem().textContent = "The token is needed again: reopen the page with ?token=.";
        return; // no point asking again without it
      }
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      render(await response.json());
      problem().textContent = "";
    } catch (error) {
      problem().textContent = "Cannot reach the daemon; trying again.";
    }
    window.setTimeout(poll, POLL_MS);
  }

  for (const el of document.querySelectorAll("time[data-local],time[data-local-title]")) {
    localize(el);
  }
  document.documentElement.dataset.live = "starting";
  poll().then(() => {
    document.documentElement.dataset.live = "on";
  });
})();
