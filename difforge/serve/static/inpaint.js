// The Inpaint tab: a good image, a mask painted with the mouse, POST /v1/inpaint, image + mask downloads.
// Uses $, api and option of app.js (loaded first). The image and mask live at the model's size S in two
// off-screen canvases; the visible canvas shows them scaled up, the mask in red. Brush strokes set whole
// pixels (no antialiasing), so the mask sent is exactly binary.
"use strict";

const inp = { size: 0, image: null, mask: null, ready: false, drawing: false };

function inpModel() {
  return state.models.find((x) => x.name === $("model").value) || state.models[0];
}

function inpShowError(msg) {
  $("inp-error").textContent = msg || "";
  $("inp-error").hidden = !msg;
}

function inpCanvas(size, fill) {
  const c = document.createElement("canvas");
  c.width = c.height = size;
  const g = c.getContext("2d");
  g.fillStyle = fill;
  g.fillRect(0, 0, size, size);
  return c;
}

function inpSetup() {
  const m = inpModel();
  if (!m) return;
  const cls = $("inp-class");
  const keep = cls.value;
  cls.replaceChildren();
  if (m.classes.length) m.classes.forEach((c) => option(cls, c, c));
  else option(cls, "", "(unconditional)");
  if (m.classes.includes(keep)) cls.value = keep;
  if (inp.size !== m.image_size) {
    inp.size = m.image_size;
    inp.image = inpCanvas(inp.size, "#808080");
    inp.mask = inpCanvas(inp.size, "#000");
    inp.ready = false;
    $("inp-canvas").dataset.ready = "0";
  }
  inpRender();
}

function inpRender() {
  const view = $("inp-canvas");
  const g = view.getContext("2d");
  g.imageSmoothingEnabled = false;
  g.clearRect(0, 0, view.width, view.height);
  if (!inp.image) return;
  g.drawImage(inp.image, 0, 0, view.width, view.height);
  const px = inp.mask.getContext("2d").getImageData(0, 0, inp.size, inp.size).data;
  const cell = view.width / inp.size;
  g.fillStyle = "rgba(255, 0, 0, 0.5)";
  for (let i = 0; i < inp.size * inp.size; i++) {
    if (px[4 * i] > 127) g.fillRect((i % inp.size) * cell, Math.floor(i / inp.size) * cell, cell, cell);
  }
}

function inpLoad(src) {
  const im = new Image();
  im.onload = () => {
    inpSetup();
    const side = Math.min(im.naturalWidth, im.naturalHeight);
    const g = inp.image.getContext("2d");
    g.imageSmoothingQuality = "high";
    g.drawImage(im, (im.naturalWidth - side) / 2, (im.naturalHeight - side) / 2, side, side, 0, 0, inp.size, inp.size);
    inp.ready = true;
    $("inp-canvas").dataset.ready = "1";
    inpRender();
  };
  im.onerror = () => inpShowError("cannot read that image; choose a PNG or JPEG");
  im.src = src;
}

function inpPaint(ev) {
  const r = $("inp-canvas").getBoundingClientRect();
  const x = Math.floor(((ev.clientX - r.left) / r.width) * inp.size);
  const y = Math.floor(((ev.clientY - r.top) / r.height) * inp.size);
  const rad = Math.max(0, parseInt($("inp-brush").value, 10) || 0);
  const g = inp.mask.getContext("2d");
  g.fillStyle = "#fff";
  for (let dy = -rad; dy <= rad; dy++) {
    for (let dx = -rad; dx <= rad; dx++) {
      if (dx * dx + dy * dy <= rad * rad + rad) g.fillRect(x + dx, y + dy, 1, 1);
    }
  }
  inpRender();
}

function inpRefreshPicks() {
  const pick = $("inp-pick");
  pick.replaceChildren();
  option(pick, "", "a generated image");
  document.querySelectorAll("#images img").forEach((img, i) => option(pick, String(i), img.alt || "image " + i));
}

function inpDownload(href, name, text) {
  const a = document.createElement("a");
  a.href = href;
  a.download = name;
  a.textContent = text;
  return a;
}

async function inpGenerate() {
  inpShowError("");
  if (!inp.ready) return inpShowError("choose a good image first (upload one or pick a generated one)");
  const m = inpModel();
  const cls = $("inp-class").value;
  const body = {
    model: m.name,
    class: cls === "" ? null : cls,
    image_base64: inp.image.toDataURL("image/png"),
    mask_base64: inp.mask.toDataURL("image/png"),
    steps: parseInt($("inp-steps").value, 10),
    num: parseInt($("inp-num").value, 10),
    seed: parseInt($("inp-seed").value, 10),
    ...($("inp-method").value ? { method: $("inp-method").value } : {}),
  };
  $("inp-generate").disabled = true;
  $("inp-status").textContent = "inpainting…";
  $("inp-results").replaceChildren();
  try {
    const out = await (await api("/v1/inpaint", { method: "POST", body: JSON.stringify(body) })).json();
    const box = $("inp-results");
    for (const im of out.images) {
      const url = "data:image/png;base64," + im.png_base64;
      const name = `inpaint_${String(im.index).padStart(4, "0")}${im.class_name ? "_" + im.class_name : ""}_seed${im.seed}.png`;
      const fig = document.createElement("figure");
      const img = document.createElement("img");
      img.src = url;
      img.alt = name;
      const a = inpDownload(url, name, "");
      a.appendChild(img);
      const cap = document.createElement("figcaption");
      cap.textContent = (im.class_name ? im.class_name + " " : "") + "seed " + im.seed;
      fig.append(a, cap);
      box.appendChild(fig);
    }
    const mask = inpDownload("data:image/png;base64," + out.mask_png_base64, "mask.png", "Download mask");
    mask.id = "inp-mask-link";
    box.appendChild(mask);
    $("inp-status").textContent = `${out.images.length} images (${out.method}) in ${out.seconds.toFixed(2)} s`;
  } catch (e) {
    $("inp-status").textContent = "";
    inpShowError(e.message);
  } finally {
    $("inp-generate").disabled = false;
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("inpaint-open").addEventListener("click", () => {
    const panel = $("inpaint-panel");
    panel.hidden = !panel.hidden;
    $("inpaint-open").setAttribute("aria-expanded", String(!panel.hidden));
    if (!panel.hidden) { inpSetup(); inpRefreshPicks(); }
  });
  $("model").addEventListener("change", inpSetup);
  $("inp-file").addEventListener("change", () => {
    const f = $("inp-file").files[0];
    if (!f) return;
    const reader = new FileReader();
    reader.onload = () => inpLoad(reader.result);
    reader.readAsDataURL(f);
  });
  $("inp-pick").addEventListener("focus", inpRefreshPicks);
  $("inp-pick").addEventListener("change", () => {
    const img = document.querySelectorAll("#images img")[parseInt($("inp-pick").value, 10)];
    if (img) inpLoad(img.src);
  });
  $("inp-clear").addEventListener("click", () => { if (inp.mask) { inp.mask = inpCanvas(inp.size, "#000"); inpRender(); } });
  const view = $("inp-canvas");
  view.addEventListener("mousedown", (ev) => { if (inp.mask) { inp.drawing = true; inpPaint(ev); } });
  view.addEventListener("mousemove", (ev) => { if (inp.drawing) inpPaint(ev); });
  window.addEventListener("mouseup", () => { inp.drawing = false; });
  $("inp-generate").addEventListener("click", inpGenerate);
});
