// The bbc1k page: send a photo to /analyze, show the class, the box and the mask.
// Plain JavaScript, no external library or CDN, so it works offline.
"use strict";

const $ = (id) => document.getElementById(id);
let photoUrl = null;

function showError(message) {
  const el = $("error");
  el.textContent = message;
  el.hidden = !message;
}

async function loadModels() {
  try {
    const r = await fetch("/api/models");
    const info = await r.json();
    const on = info.tasks || [];
    document.querySelectorAll("input[name=task]").forEach((box) => {
      const enabled = on.includes(box.value);
      box.disabled = !enabled;
      box.checked = box.checked && enabled;
      box.parentElement.classList.toggle("off", !enabled);
    });
    const names = { classify: "class", detect: "box", segment: "mask" };
    $("models-status").textContent = !info.ready ? "The models are still loading; try again in a moment."
      : on.length ? "Finds: " + on.map((t) => names[t]).join(", ") + "."
      : "No model is loaded on this server.";
  } catch (e) {
    $("models-status").textContent = "Cannot reach the server.";
  }
}

function chosenTasks() {
  return [...document.querySelectorAll("input[name=task]:checked")].map((b) => b.value);
}

async function analyze(blob, name) {
  showError("");
  if (!blob) return;
  const tasks = chosenTasks();
  if (!tasks.length) { showError("Choose at least one of class, box or mask."); return; }
  if (photoUrl) URL.revokeObjectURL(photoUrl);
  photoUrl = URL.createObjectURL(blob);
  const form = new FormData();
  form.append("file", blob, name || "image");
  $("busy").hidden = false;
  try {
    const r = await fetch("/analyze?tasks=" + tasks.join(","), { method: "POST", body: form });
    let body;
    try { body = await r.json(); } catch (e) { body = { error: `the server answered ${r.status} ${r.statusText}` }; }
    if (!r.ok) { $("result").hidden = true; showError("Could not analyse this file: " + (body.error || r.status)); return; }
    render(body);
  } catch (e) {
    showError("Could not reach the server: " + e.message);
  } finally {
    $("busy").hidden = true;
  }
}

function pct(p) { return (100 * p).toFixed(1) + "%"; }

function render(res) {
  const photo = $("photo");
  photo.src = photoUrl;
  $("result").hidden = false;
  const cls = res.classification;
  const det = res.detection;
  $("label").textContent = cls ? `${cls.label} (${pct(cls.confidence)})` : det && det.label ? det.label : "done";

  const bars = $("bars");
  bars.replaceChildren();
  if (cls) {
    for (const [name, p] of Object.entries(cls.probabilities).sort((a, b) => b[1] - a[1])) {
      const row = document.createElement("div");
      row.className = "bar" + (name === cls.label ? " top" : "");
      row.setAttribute("role", "meter");
      row.setAttribute("aria-label", name);
      row.setAttribute("aria-valuemin", "0");
      row.setAttribute("aria-valuemax", "100");
      row.setAttribute("aria-valuenow", (100 * p).toFixed(1));
      row.innerHTML = '<span class="name"></span><span class="track"><span class="fill"></span></span><span class="pct"></span>';
      row.querySelector(".name").textContent = name;
      row.querySelector(".fill").style.width = pct(p);
      row.querySelector(".pct").textContent = pct(p);
      bars.append(row);
    }
  }

  const W = res.image.width, H = res.image.height;
  const box = $("box");
  if (det) {
    const [x0, y0, x1, y1] = det.box;
    Object.assign(box.style, { left: pct(x0 / W), top: pct(y0 / H), width: pct((x1 - x0) / W), height: pct((y1 - y0) / H) });
    $("box-label").textContent = det.label ? `${det.label}${det.confidence != null ? " " + pct(det.confidence) : ""}` : "object";
    box.hidden = false;
  } else {
    box.hidden = true;
  }

  const mask = $("mask");
  const seg = res.segmentation;
  if (seg) {
    mask.src = "data:image/png;base64," + seg.png_base64;
    mask.hidden = false;
    $("mask-controls").hidden = false;
    const legend = $("legend");
    legend.replaceChildren();
    seg.classes.forEach((c, i) => {
      if (i === 0) return; // background is transparent
      const li = document.createElement("li");
      li.style.setProperty("--swatch", seg.colors[i]);
      li.textContent = `${c} ${pct(seg.fractions[c] || 0)}`;
      legend.append(li);
    });
  } else {
    mask.hidden = true;
    mask.removeAttribute("src");
    $("mask-controls").hidden = true;
  }
  const t = res.timings_ms || {};
  $("timings").textContent = `${W}\u00d7${H} px, answered in ${Math.round(t.total || 0)} ms`;
}

function firstImage(items) {
  for (const item of items || []) {
    if (item.kind === "file") { const f = item.getAsFile(); if (f) return f; }
  }
  return null;
}

function setup() {
  const input = $("file-input");
  input.addEventListener("change", () => { if (input.files[0]) analyze(input.files[0], input.files[0].name); input.value = ""; });

  const zone = $("drop-zone");
  zone.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); input.click(); } });
  ["dragenter", "dragover"].forEach((t) => zone.addEventListener(t, (e) => { e.preventDefault(); zone.classList.add("over"); }));
  ["dragleave", "drop"].forEach((t) => zone.addEventListener(t, () => zone.classList.remove("over")));
  zone.addEventListener("drop", (e) => {
    e.preventDefault();
    const f = e.dataTransfer.files[0];
    if (f) analyze(f, f.name); else showError("Drop an image file.");
  });
  document.addEventListener("paste", (e) => {
    const f = firstImage(e.clipboardData && e.clipboardData.items);
    if (f) { e.preventDefault(); analyze(f, f.name || "pasted.png"); }
  });

  document.querySelectorAll(".example").forEach((b) => b.addEventListener("click", async () => {
    try {
      const r = await fetch(b.dataset.src);
      if (!r.ok) throw new Error(`${r.status}`);
      analyze(await r.blob(), b.dataset.src.split("/").pop());
    } catch (e) { showError("Could not load the example: " + e.message); }
  }));

  $("opacity").addEventListener("input", (e) => { $("mask").style.opacity = e.target.value / 100; });
  loadModels();
}

setup();
