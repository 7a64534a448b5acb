// lenet serve's page: draw, upload or pick an image; see the model's answer and its
// activation maps. Plain JavaScript, no build step, no network beyond this server.
"use strict";

const pad = document.getElementById("pad");
const ctx = pad.getContext("2d");
const $ = (id) => document.getElementById(id);
const DEBOUNCE_MS = 120;

const state = {
  strokes: [],      // each: {width, points: [[x, y], ...]} in canvas pixels
  drawing: null,    // the stroke under the pointer
  file: null,       // {blob, name}: an uploaded or picked image, instead of strokes
  timer: null,
  busy: false,      // a request is out
  again: false,     // the input changed while it was out
  seq: 0,
};

function token() {
  return sessionStorage.getItem("lenet-token") || "";
}

function headers(extra) {
  const h = Object.assign({}, extra || {});
  if (token()) h["Authorization"] = "Bearer " + token();
  return h;
}

function say(text, isError) {
  const status = $("status");
  status.textContent = text;
  status.classList.toggle("error", Boolean(isError));
}

async function api(path, options) {
  const response = await fetch(path, Object.assign({}, options, {
    headers: headers((options || {}).headers),
  }));
  let body = null;
  try {
    body = await response.json();
  } catch (e) {
    body = {error: "bad_response", detail: "the server's answer was not JSON"};
  }
  if (response.status === 401) {
    $("token-box").hidden = false;
  }
  if (!response.ok) {
    const error = new Error(body.detail || body.error || response.statusText);
    error.status = response.status;
    throw error;
  }
  return body;
}

// --- drawing -------------------------------------------------------------------------

function redraw() {
  ctx.fillStyle = "#000";
  ctx.fillRect(0, 0, pad.width, pad.height);
  ctx.strokeStyle = "#fff";
  ctx.lineCap = "round";
  ctx.lineJoin = "round";
  for (const stroke of state.strokes) {
    ctx.lineWidth = stroke.width;
    ctx.beginPath();
    const [x0, y0] = stroke.points[0];
    ctx.moveTo(x0, y0);
    for (const [x, y] of stroke.points) ctx.lineTo(x, y);
    if (stroke.points.length === 1) ctx.lineTo(x0 + 0.1, y0);
    ctx.stroke();
  }
}

function where(event) {
  const box = pad.getBoundingClientRect();
  return [(event.clientX - box.left) * pad.width / box.width,
          (event.clientY - box.top) * pad.height / box.height];
}

pad.addEventListener("pointerdown", (event) => {
  event.preventDefault();
  pad.setPointerCapture(event.pointerId);
  if (state.file) {  // drawing starts afresh over a picked image
    state.file = null;
    state.strokes = [];
  }
  state.drawing = {width: Number($("brush").value), points: [where(event)]};
  state.strokes.push(state.drawing);
  redraw();
  schedule();
});

pad.addEventListener("pointermove", (event) => {
  if (!state.drawing) return;
  const events = event.getCoalescedEvents ? event.getCoalescedEvents() : [event];
  for (const e of events) state.drawing.points.push(where(e));
  redraw();
  schedule();
});

function endStroke() {
  if (!state.drawing) return;
  state.drawing = null;
  update();
}
pad.addEventListener("pointerup", endStroke);
pad.addEventListener("pointercancel", endStroke);

function undo() {
  if (state.file) {
    clearAll();
    return;
  }
  state.strokes.pop();
  redraw();
  update();
}

function clearAll() {
  state.strokes = [];
  state.file = null;
  redraw();
  showEmpty();
}

$("undo").addEventListener("click", undo);
$("clear").addEventListener("click", clearAll);
document.addEventListener("keydown", (event) => {
  if ((event.ctrlKey || event.metaKey) && event.key.toLowerCase() === "z") {
    event.preventDefault();
    undo();
  } else if (event.key === "Escape" && document.activeElement === pad) {
    clearAll();
  }
});

// --- files: upload, drop, a random test image ----------------------------------------

function showPicture(blob) {
  const url = URL.createObjectURL(blob);
  const image = new Image();
  image.onload = () => {
    redraw();
    const scale = Math.min(pad.width / image.width, pad.height / image.height);
    const w = image.width * scale, h = image.height * scale;
    ctx.imageSmoothingEnabled = image.width > pad.width / 4;
    ctx.drawImage(image, (pad.width - w) / 2, (pad.height - h) / 2, w, h);
    URL.revokeObjectURL(url);
  };
  image.onerror = () => {  // NPY, PGM: the browser cannot show them; the server reads them
    URL.revokeObjectURL(url);
    redraw();
  };
  image.src = url;
}

function useFile(blob, name) {
  state.file = {blob, name};
  state.strokes = [];
  showPicture(blob);
  update();
}

$("file").addEventListener("change", () => {
  const file = $("file").files[0];
  if (file) useFile(file, file.name);
  $("file").value = "";
});

const drop = $("drop");
drop.addEventListener("dragover", (event) => {
  event.preventDefault();
  drop.classList.add("over");
});
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (event) => {
  event.preventDefault();
  drop.classList.remove("over");
  const file = event.dataTransfer.files[0];
  if (file) useFile(file, file.name);
});

function base64Blob(text, type) {
  const bytes = Uint8Array.from(atob(text), (c) => c.charCodeAt(0));
  return new Blob([bytes], {type});
}

$("random").addEventListener("click", async () => {
  try {
    const sample = await api("/v1/sample?split=test");
    useFile(base64Blob(sample.png, "image/png"),
            `test image #${sample.index} (${sample.label})`);
  } catch (e) {
    say(`No test image: ${e.message}`, true);
  }
});

$("token").addEventListener("change", () => {
  sessionStorage.setItem("lenet-token", $("token").value);
  start();
  update();
});

// --- asking the server, debounced ----------------------------------------------------

function schedule() {
  clearTimeout(state.timer);
  state.timer = setTimeout(update, DEBOUNCE_MS);
}

function currentInput() {
  if (state.file) return Promise.resolve(state.file.blob);
  if (!state.strokes.length) return Promise.resolve(null);
  return new Promise((resolve) => pad.toBlob(resolve, "image/png"));
}

async function update() {
  clearTimeout(state.timer);
  if (state.busy) {
    state.again = true;
    return;
  }
  const blob = await currentInput();
  if (!blob) {
    showEmpty();
    return;
  }
  state.busy = true;
  const seq = ++state.seq;
  const post = {method: "POST", body: blob,
                headers: {"Content-Type": blob.type || "application/octet-stream"}};
  try {
    const [prediction, maps] = await Promise.all([
      api("/v1/predict?top_k=5&input=png", post),
      api("/v1/activations", post),
    ]);
    if (seq === state.seq) show(prediction, maps);
  } catch (e) {
    say(e.status === 401 ? "This server needs a token: enter it below." : e.message, true);
  } finally {
    state.busy = false;
    if (state.again) {
      state.again = false;
      update();
    }
  }
}

// --- showing the answer --------------------------------------------------------------

function showEmpty() {
  $("top").replaceChildren();
  $("ood").textContent = "";
  $("ood").className = "ood";
  $("latency").textContent = "";
  $("seen").removeAttribute("src");
  for (const id of ["layer1", "layer2"]) $(id).replaceChildren();
  say("Draw something, upload an image or pick a random test image.");
}

function show(prediction, maps) {
  const source = state.file ? state.file.name : "your drawing";
  say(`${source}: ${prediction.class} (${(prediction.probability * 100).toFixed(1)}%)`);
  $("seen").src = "data:image/png;base64," + prediction.input.png;
  const rows = prediction.top.map((t) => {
    const li = document.createElement("li");
    const pct = (t.probability * 100).toFixed(1);
    li.innerHTML = '<span class="name"></span><span class="track" aria-hidden="true">' +
                   '<span class="fill"></span></span><span class="pct"></span>';
    li.querySelector(".name").textContent = t.class;
    li.querySelector(".fill").style.width = `${Math.max(0.5, t.probability * 100)}%`;
    li.querySelector(".pct").textContent = `${pct}%`;
    li.setAttribute("aria-label", `${t.class}: ${pct} percent`);
    return li;
  });
  $("top").replaceChildren(...rows);
  const ood = $("ood");
  if (prediction.ood === null) {
    ood.textContent = "no out-of-distribution check for this run";
    ood.className = "ood";
  } else if (prediction.ood.out_of_distribution) {
    ood.textContent = "Out of distribution: this does not look like the training images " +
      `(${prediction.ood.detector} score ${prediction.ood.score.toFixed(2)} < ` +
      `${prediction.ood.threshold.toFixed(2)}); the classes above are a guess.`;
    ood.className = "ood flagged";
  } else {
    ood.textContent = "Looks like the training images " +
      `(${prediction.ood.detector} score ${prediction.ood.score.toFixed(2)} ≥ ` +
      `${prediction.ood.threshold.toFixed(2)}).`;
    ood.className = "ood fine";
  }
  $("latency").textContent = `server time: ${prediction.latency_ms.toFixed(1)} ms ` +
    `(predict), ${maps.latency_ms.toFixed(1)} ms (activations)`;
  const names = Object.keys(maps.layers);
  names.forEach((name, k) => {
    const layer = maps.layers[name];
    const images = layer.png.map((png, c) => {
      const img = document.createElement("img");
      img.src = "data:image/png;base64," + png;
      img.alt = `layer ${k + 1}, map ${c + 1} of ${layer.channels}`;
      img.title = img.alt;
      img.className = "map";
      return img;
    });
    $(k === 0 ? "layer1" : "layer2").replaceChildren(...images);
  });
}

// --- start ---------------------------------------------------------------------------

async function start() {
  redraw();
  showEmpty();
  for (let attempt = 0; attempt < 120; attempt++) {
    try {
      const info = await api("/v1/model");
      const acc = info.test_accuracy === null ? "" :
        `, test accuracy ${(info.test_accuracy * 100).toFixed(1)}%`;
      $("model-info").textContent = `${info.model} on ${info.dataset}${acc}; ` +
        `${info.parameters.toLocaleString()} parameters; ${info.backend} backend; ` +
        `classes: ${info.classes.join(", ")}`;
      document.body.dataset.ready = "true";
      return;
    } catch (e) {
      if (e.status === 401) {
        $("model-info").textContent = "This server needs a token: enter it on the left.";
        return;
      }
      if (e.status !== 503) {
        $("model-info").textContent = `The model is not available: ${e.message}`;
        return;
      }
      await new Promise((resolve) => setTimeout(resolve, 500));
    }
  }
}

start();
