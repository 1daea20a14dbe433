// difforge web page, Upscale tab: POST /v1/upscale with an uploaded image (plain JS, no external files).
"use strict";

(function () {
  const el = (id) => document.getElementById(id);
  let upscalers = [];
  let imageData = null;

  function authHeaders() {
    const h = { "Content-Type": "application/json" };
    const token = sessionStorage.getItem("difforge-token") || "";
    if (token) h["Authorization"] = "Bearer " + token;
    return h;
  }

  function showError(msg) {
    el("up-error").textContent = msg || "";
    el("up-error").hidden = !msg;
  }

  function add(select, value, text) {
    const o = document.createElement("option");
    o.value = value;
    o.textContent = text;
    select.appendChild(o);
  }

  function fillClasses() {
    const u = upscalers.find((x) => x.name === el("up-model").value);
    const cls = el("up-class");
    cls.replaceChildren();
    if (!u) return;
    if (u.classes.length) u.classes.forEach((c) => add(cls, c, c));
    else add(cls, "", "(any)");
    const diffusion = u.kind === "diffusion";
    el("up-steps").disabled = !diffusion;
    el("up-noise").disabled = !(diffusion && u.noise_aug);
  }

  async function load() {
    const res = await fetch("/v1/upscalers", { headers: authHeaders() });
    if (!res.ok) { showError("could not list the upscalers (" + res.status + ")"); return; }
    upscalers = (await res.json()).upscalers;
    const sel = el("up-model");
    sel.replaceChildren();
    upscalers.forEach((u) => add(sel, u.name, u.name + " (x" + u.scale + ", " + u.kind + ")"));
    if (!upscalers.length) el("up-status").textContent = "this server has no super-resolution model";
    el("up-go").disabled = !upscalers.length;
    fillClasses();
  }

  function readFile(f) {
    return new Promise((ok, fail) => {
      const reader = new FileReader();
      reader.onload = () => ok(String(reader.result));
      reader.onerror = () => fail(new Error("could not read " + f.name));
      reader.readAsDataURL(f);
    });
  }

  async function go() {
    showError("");
    const file = el("up-file").files[0];
    if (!imageData && file) imageData = await readFile(file);
    if (!imageData) { showError("choose an image first"); return; }
    const u = upscalers.find((x) => x.name === el("up-model").value);
    const body = { model: u.name, image_base64: imageData, seed: Number(el("up-seed").value) };
    if (u.kind === "diffusion") {
      body.steps = Number(el("up-steps").value);
      if (u.noise_aug) body.noise_level = Number(el("up-noise").value);
    }
    if (u.classes.length) body["class"] = el("up-class").value;
    el("up-go").disabled = true;
    el("up-status").textContent = "upscaling\u2026";
    try {
      const res = await fetch("/v1/upscale", { method: "POST", headers: authHeaders(), body: JSON.stringify(body) });
      const out = await res.json();
      if (!res.ok) throw new Error(out.detail || res.statusText);
      const img = document.createElement("img");
      img.src = "data:image/png;base64," + out.png_base64;
      img.alt = "upscaled " + out.width + "x" + out.height;
      img.id = "up-image";
      const link = document.createElement("a");
      link.href = img.src;
      link.download = "upscaled.png";
      link.appendChild(img);
      el("up-result").replaceChildren(link);
      el("up-status").textContent = out.width + "x" + out.height + " px in " + out.seconds + " s";
    } catch (e) {
      showError(String(e.message || e));
      el("up-status").textContent = "";
    } finally {
      el("up-go").disabled = false;
    }
  }

  document.addEventListener("DOMContentLoaded", () => {
    el("upscale-open").addEventListener("click", () => {
      const open = el("upscale-panel").hidden;
      el("upscale-panel").hidden = !open;
      el("upscale-open").setAttribute("aria-expanded", String(open));
      if (open && !upscalers.length) load();
    });
    el("up-model").addEventListener("change", fillClasses);
    el("up-go").addEventListener("click", go);
    el("up-file").addEventListener("change", () => {
      const f = el("up-file").files[0];
      imageData = null;
      if (f) readFile(f).then((d) => { imageData = d; }, (e) => showError(e.message));
    });
  });
})();
