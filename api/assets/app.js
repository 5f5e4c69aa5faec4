// The upload page: choose images, upload each (POST /api/v1/thumbnails/), follow each job's
// server-sent events until SUCCESS or FAILURE, then show the thumbnail over its ThumbHash.
//
// Rules this file keeps:
// - data from files or the API reaches the page through textContent and properties only
//   (never innerHTML), so a file named `<img onerror=…>` is just text;
// - the API key lives in sessionStorage and travels in the Authorization header only: never in
//   a URL (EventSource cannot send headers, so events are read with fetch and a stream parser).
"use strict";

(function () {
  const KEY_STORAGE = "thumbnail.apiKey";
  const FINAL = new Set(["SUCCESS", "FAILURE"]);
  // Files in flight at once: each follows its job on an open connection, and browsers allow six
  // per origin; three leave room for uploads, links and the page itself.
  const CONCURRENCY = 3;
  // Long-poll fallback: seconds per request.
  const WAIT_SECONDS = 30;

  const $ = (id) => document.getElementById(id);
  const ui = {
    keyForm: $("key-form"),
    keyWhy: $("key-why"),
    keyInput: $("api-key"),
    forgetKey: $("forget-key"),
    width: $("width"),
    height: $("height"),
    fit: $("fit"),
    format: $("format"),
    drop: $("drop"),
    files: $("files"),
    clear: $("clear"),
    status: $("status"),
    cards: $("cards"),
    template: $("card-template"),
  };

  function announce(text) {
    ui.status.textContent = text;
  }

  // ---- The API key -------------------------------------------------------------------------

  function storedKey() {
    try {
      return sessionStorage.getItem(KEY_STORAGE);
    } catch (_) {
      return null;
    }
  }

  function showForgetButton() {
    ui.forgetKey.hidden = storedKey() === null;
  }

  // One prompt at a time: every request refused meanwhile waits for the same answer.
  let keyPrompt = null;

  function askForKey(reason) {
    if (keyPrompt === null) {
      let resolve;
      const promise = new Promise((r) => {
        resolve = r;
      });
      keyPrompt = { promise, resolve };
      ui.keyWhy.textContent = reason;
      ui.keyForm.hidden = false;
      ui.keyInput.value = "";
      ui.keyInput.focus();
      announce("This server needs an API key: enter it above.");
    }
    return keyPrompt.promise;
  }

  ui.keyForm.addEventListener("submit", (event) => {
    event.preventDefault();
    const key = ui.keyInput.value.trim();
    if (key === "") return;
    sessionStorage.setItem(KEY_STORAGE, key);
    ui.keyInput.value = "";
    ui.keyForm.hidden = true;
    showForgetButton();
    announce("API key saved for this tab.");
    const prompt = keyPrompt;
    keyPrompt = null;
    if (prompt) prompt.resolve();
  });

  ui.forgetKey.addEventListener("click", () => {
    sessionStorage.removeItem(KEY_STORAGE);
    showForgetButton();
    announce("The API key was forgotten.");
  });

  // ---- Talking to the API ------------------------------------------------------------------

  async function errorDetail(response) {
    try {
      const body = await response.json();
      if (body && typeof body.detail === "string") return body.detail;
    } catch (_) {
      // Not JSON: say what the status was.
    }
    return `HTTP ${response.status} ${response.statusText}`.trim();
  }

  // fetch() with the key; on 401 ask for a key and try again with it.
  async function api(path, init = {}) {
    for (;;) {
      const key = storedKey();
      const headers = new Headers(init.headers || {});
      if (key !== null) headers.set("Authorization", `Bearer ${key}`);
      const response = await fetch(path, {
        ...init,
        headers,
        cache: "no-store",
        credentials: "omit",
      });
      if (response.status !== 401) return response;
      const detail = await errorDetail(response);
      // Forget the key this request was refused with (unless a new one came meanwhile).
      if (key !== null && storedKey() === key) {
        sessionStorage.removeItem(KEY_STORAGE);
        showForgetButton();
      }
      await askForKey(
        key === null
          ? `Uploads and job reads need an API key (${detail}). It is kept in this tab's session storage only and sent in the Authorization header, never in a URL.`
          : `The server refused the key: ${detail}. Enter another one.`,
      );
    }
  }

  // ---- Server-sent events over fetch ------------------------------------------------------

  // The text/event-stream format, incrementally: push() text as it comes, get whole events.
  class EventStreamParser {
    constructor() {
      this.buffer = "";
      this.reset();
    }
    reset() {
      this.type = "";
      this.data = [];
      this.id = null;
    }
    push(text) {
      this.buffer += text;
      const events = [];
      const lines = this.buffer.split(/\r\n|\n|\r(?!$)/);
      // The last piece has no line end yet (or is "" after one).
      this.buffer = lines.pop();
      for (const line of lines) {
        if (line === "") {
          if (this.data.length > 0) {
            events.push({ type: this.type || "message", data: this.data.join("\n"), id: this.id });
          }
          this.reset();
          continue;
        }
        if (line.startsWith(":")) continue; // a keep-alive comment
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        let value = colon < 0 ? "" : line.slice(colon + 1);
        if (value.startsWith(" ")) value = value.slice(1);
        if (field === "event") this.type = value;
        else if (field === "data") this.data.push(value);
        else if (field === "id") this.id = value;
      }
      return events;
    }
  }

  async function* eventsOf(body) {
    const reader = body.pipeThrough(new TextDecoderStream()).getReader();
    const parser = new EventStreamParser();
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      yield* parser.push(value);
    }
  }

  const jobPath = (id) => `/api/v1/jobs/${encodeURIComponent(id)}`;

  // Follow a job until it is finished: its event stream, or long-polls when streaming fails.
  async function follow(card, jobId) {
    try {
      const response = await api(`${jobPath(jobId)}/events`, {
        headers: { Accept: "text/event-stream" },
      });
      if (response.status === 404 || response.status === 410) {
        card.refused(response.status, await errorDetail(response));
        return;
      }
      if (response.ok && response.body) {
        for await (const event of eventsOf(response.body)) {
          if (event.type === "status") {
            const job = JSON.parse(event.data);
            await card.update(job);
            if (FINAL.has(job.status)) return;
          } else if (event.type === "error") {
            card.refused(410, event.data);
            return;
          }
        }
      }
    } catch (error) {
      // The stream broke (a proxy, the network): the long-poll below picks up from here.
      console.warn("event stream failed, long-polling instead", error);
    }
    await longPoll(card, jobId);
  }

  const pause = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

  async function longPoll(card, jobId) {
    for (;;) {
      const response = await api(`${jobPath(jobId)}?wait=${WAIT_SECONDS}`);
      if (response.status === 429 || response.status === 503) {
        // Too many waits open, or the store is down: come back when the server says.
        const retry = Number(response.headers.get("Retry-After")) || 2;
        await pause(Math.min(retry, 30) * 1000);
        continue;
      }
      if (!response.ok) {
        card.refused(response.status, await errorDetail(response));
        return;
      }
      const job = await response.json();
      await card.update(job);
      if (FINAL.has(job.status)) return;
    }
  }

  // ---- Cards -------------------------------------------------------------------------------

  const STATE_TEXT = {
    QUEUED: "Waiting to upload",
    UPLOADING: "Uploading…",
    PENDING: "PENDING: queued",
    STARTED: "STARTED: making the thumbnail",
    SUCCESS: "SUCCESS",
    FAILURE: "FAILURE",
    REFUSED: "Refused",
  };

  function downloadName(fileName, key) {
    const stem = fileName.replace(/\.[^.]*$/, "") || "thumbnail";
    const ext = (key.match(/\.([a-z0-9]+)$/i) || [, "img"])[1];
    return `${stem}-thumbnail.${ext}`;
  }

  class Card {
    constructor(file) {
      this.file = file;
      this.el = ui.template.content.firstElementChild.cloneNode(true);
      this.q = (selector) => this.el.querySelector(selector);
      this.q(".name").textContent = file.name;
      this.q(".name").title = file.name;
      this.setState("QUEUED");
      ui.cards.prepend(this.el);
    }

    setState(state, detail) {
      this.el.dataset.state = state;
      this.q(".state").textContent = STATE_TEXT[state] || state;
      if (detail !== undefined) this.q(".detail").textContent = detail;
      announce(`${this.file.name}: ${STATE_TEXT[state] || state}`);
    }

    refused(status, detail) {
      this.el.dataset.httpStatus = String(status);
      this.setState("REFUSED", detail);
      this.q(".state").textContent = `Refused (HTTP ${status})`;
    }

    async update(job) {
      this.el.dataset.jobId = job.job_id;
      if (job.status === "FAILURE") {
        const why = job.error ? `${job.error.message} (${job.error.reason})` : "the job failed";
        this.setState("FAILURE", why);
        return;
      }
      if (job.status !== "SUCCESS") {
        this.setState(job.status);
        return;
      }
      const output = job.outputs[0];
      this.showPlaceholder(job.placeholder && job.placeholder.thumbhash);
      const response = await api(`${jobPath(job.job_id)}/thumbnail`);
      if (!response.ok) {
        this.refused(response.status, await errorDetail(response));
        return;
      }
      const link = await response.json();
      const img = this.q(".thumb");
      img.alt = `Thumbnail of ${this.file.name}`;
      if (output) {
        img.width = output.width;
        img.height = output.height;
      }
      img.addEventListener("load", () => this.el.classList.add("loaded"), { once: true });
      img.addEventListener(
        "error",
        () => {
          this.el.classList.add("broken");
          this.q(".detail").textContent = "The thumbnail could not be displayed; try the download link.";
        },
        { once: true },
      );
      img.src = link.thumbnail_url;
      const a = this.q(".download");
      a.href = link.thumbnail_url;
      a.download = downloadName(this.file.name, output ? output.key : "");
      a.textContent = output ? `Download (${output.width}×${output.height}, ${output.bytes} bytes)` : "Download";
      a.hidden = false;
      this.setState("SUCCESS", "");
    }

    showPlaceholder(thumbhash) {
      if (!thumbhash || !window.ThumbHash) return;
      try {
        window.ThumbHash.drawThumbHash(this.q(".placeholder"), thumbhash);
        this.el.classList.add("has-placeholder");
      } catch (error) {
        console.warn("unreadable ThumbHash", error);
      }
    }
  }

  // ---- Uploads -----------------------------------------------------------------------------

  // The options as form fields; an empty format means "the input's format" (the API's default).
  function options() {
    const fields = {
      width: ui.width.value.trim(),
      height: ui.height.value.trim(),
      fit: ui.fit.value,
      format: ui.format.value,
    };
    return Object.entries(fields).filter(([, value]) => value !== "");
  }

  async function upload(card) {
    const form = new FormData();
    for (const [name, value] of card.options) form.append(name, value);
    form.append("image", card.file, card.file.name);
    card.setState("UPLOADING");
    const response = await api("/api/v1/thumbnails/", { method: "POST", body: form });
    if (response.status !== 202) {
      card.refused(response.status, await errorDetail(response));
      return null;
    }
    return (await response.json()).job_id;
  }

  const queue = [];
  let running = 0;

  async function process(card) {
    try {
      const jobId = await upload(card);
      if (jobId) {
        card.setState("PENDING");
        await follow(card, jobId);
      }
    } catch (error) {
      card.refused(0, `the request failed: ${error.message}`);
    }
  }

  function pump() {
    while (running < CONCURRENCY && queue.length > 0) {
      const card = queue.shift();
      running++;
      process(card).finally(() => {
        running--;
        pump();
      });
    }
  }

  function addFiles(fileList) {
    const files = Array.from(fileList);
    if (files.length === 0) return;
    const chosen = options();
    for (const file of files) {
      const card = new Card(file);
      card.options = chosen;
      queue.push(card);
    }
    announce(`${files.length} file${files.length === 1 ? "" : "s"} added.`);
    pump();
  }

  ui.files.addEventListener("change", () => {
    addFiles(ui.files.files);
    // Choosing the same files again is a new upload.
    ui.files.value = "";
  });

  ui.drop.addEventListener("click", () => ui.files.click());
  ui.drop.addEventListener("keydown", (event) => {
    if (event.key === "Enter" || event.key === " ") {
      event.preventDefault();
      ui.files.click();
    }
  });
  ui.drop.addEventListener("dragover", (event) => {
    event.preventDefault();
    event.dataTransfer.dropEffect = "copy";
    ui.drop.classList.add("over");
  });
  ui.drop.addEventListener("dragleave", () => ui.drop.classList.remove("over"));
  ui.drop.addEventListener("drop", (event) => {
    event.preventDefault();
    ui.drop.classList.remove("over");
    addFiles(event.dataTransfer.files);
  });

  ui.clear.addEventListener("click", () => {
    for (const el of Array.from(ui.cards.children)) {
      if (["SUCCESS", "FAILURE", "REFUSED"].includes(el.dataset.state)) el.remove();
    }
    announce("Finished jobs cleared.");
  });

  showForgetButton();
  // Ask for a key at once when the server needs one, rather than at the first upload.
  api("/api/v1/jobs/?limit=1").catch((error) => console.warn("the API is unreachable", error));
})();
