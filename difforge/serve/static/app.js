// difforge web page: plain JS over the /v1 API (no build step, no external files).
"use strict";

const $ = (id) => document.getElementById(id);
const state = { models: [], job: null, polling: null };

function headers(json) {
  const h = {};
  const token = sessionStorage.getItem("difforge-token") || "";
  if (token) h["Authorization"] = "Bearer " + token;
  if (json) h["Content-Type"] = "application/json";
  return h;
}

async function api(path, options = {}) {
  const res = await fetch(path, { ...options, headers: headers(options.body !== undefined) });
  if (res.status === 401) {
    $("token-row").hidden = false;
    throw new Error("this server needs a token: enter it in the Token field");
  }
  if (!res.ok) {
    let msg = res.status + " " + res.statusText;
    try { const body = await res.json(); if (body.detail) msg = String(body.detail); } catch (e) { /* not JSON */ }
    throw new Error(msg);
  }
  return res;
}

function showError(msg) {
  $("error").textContent = msg || "";
  $("error").hidden = !msg;
}

function option(select, value, text) {
  const o = document.createElement("option");
  o.value = value;
  o.textContent = text;
  select.appendChild(o);
}

function fillModel() {
  const m = state.models.find((x) => x.name === $("model").value) || state.models[0];
  if (!m) return;
  const cls = $("class");
  cls.replaceChildren();
  if (m.classes.length) {
    option(cls, "", "classes in turn");
    m.classes.forEach((c) => option(cls, c, c));
    option(cls, "all", "all (images per class)");
  } else {
    option(cls, "", "(unconditional)");
  }
  const sampler = $("sampler");
  sampler.replaceChildren();
  m.samplers.forEach((s) => option(sampler, s, s));
  const d = m.defaults;
  sampler.value = d.sampler;
  $("steps").value = d.steps;
  $("cfg").value = d.cfg;
  $("seed").value = d.seed;
  $("num").value = d.num;
  $("prompt-row").hidden = !m.text;
  $("status").textContent = `${m.name}: ${m.image_size}px, ${m.channels} channel(s), ${m.classes.length || "no"} classes`;
}

async function loadModels() {
  try {
    const body = await (await api("/v1/models")).json();
    state.models = body.models;
    if (body.auth) $("token-row").hidden = false;
    const sel = $("model");
    sel.replaceChildren();
    body.models.forEach((m) => option(sel, m.name, m.name));
    $("steps").max = body.limits.max_steps;
    $("num").max = body.limits.max_num;
    if (!body.models.length) {
      $("generate").disabled = true;
      $("status").textContent = "this server has only upscalers: use the Upscale tab";
      return;
    }
    fillModel();
    showError("");
  } catch (e) {
    $("status").textContent = "not connected";
    showError(e.message);
  }
}

function request() {
  const cls = $("class").value;
  return {
    model: $("model").value,
    class: cls === "" ? null : cls,
    sampler: $("sampler").value,
    steps: parseInt($("steps").value, 10),
    cfg: parseFloat($("cfg").value),
    seed: parseInt($("seed").value, 10),
    num: parseInt($("num").value, 10),
    ...(!$("prompt-row").hidden && $("prompt").value.trim() ? { prompt: $("prompt").value.trim() } : {}),
  };
}

function setProgress(p, text) {
  $("progress").value = p;
  $("progress-text").textContent = text;
}

function showImages(job) {
  const box = $("images");
  box.replaceChildren();
  for (const im of job.images) {
    const url = "data:image/png;base64," + im.png_base64;
    const name = `${String(im.index).padStart(4, "0")}${im.class_name ? "_" + im.class_name : ""}_seed${im.seed}.png`;
    const a = document.createElement("a");
    a.href = url;
    a.download = name;
    a.title = "save " + name;
    const img = document.createElement("img");
    img.src = url;
    img.alt = name;
    a.appendChild(img);
    const fig = document.createElement("figure");
    const cap = document.createElement("figcaption");
    cap.textContent = (im.class_name ? im.class_name + " " : "") + "seed " + im.seed;
    fig.append(a, cap);
    box.appendChild(fig);
  }
  $("downloads").hidden = false;
}

async function poll(id) {
  try {
    const job = await (await api("/v1/jobs/" + id)).json();
    setProgress(job.progress, `${job.state} ${Math.round(job.progress * 100)}%`);
    if (job.state === "done") {
      state.job = job;
      showImages(job);
      setProgress(1, `done: ${job.images.length} images in ${job.seconds.toFixed(2)} s`);
      $("generate").disabled = false;
      return;
    }
    if (job.state === "failed") throw new Error(job.error || "generation failed");
    state.polling = setTimeout(() => poll(id), 250);
  } catch (e) {
    showError(e.message);
    $("generate").disabled = false;
  }
}

async function generate(ev) {
  ev.preventDefault();
  clearTimeout(state.polling);
  showError("");
  $("downloads").hidden = true;
  $("images").replaceChildren();
  $("generate").disabled = true;
  setProgress(0, "queued");
  try {
    const job = await (await api("/v1/jobs", { method: "POST", body: JSON.stringify(request()) })).json();
    poll(job.id);
  } catch (e) {
    setProgress(0, "");
    showError(e.message);
    $("generate").disabled = false;
  }
}

async function downloadZip() {
  if (!state.job) return;
  try {
    const blob = await (await api(state.job.zip_url)).blob();
    const a = document.createElement("a");
    a.href = URL.createObjectURL(blob);
    a.download = `difforge-${state.job.model}-seed${state.job.settings.seed}.zip`;
    document.body.appendChild(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(a.href), 10000);
  } catch (e) {
    showError(e.message);
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("token").value = sessionStorage.getItem("difforge-token") || "";
  $("token").addEventListener("change", () => { sessionStorage.setItem("difforge-token", $("token").value.trim()); loadModels(); });
  $("model").addEventListener("change", fillModel);
  $("form").addEventListener("submit", generate);
  $("download-zip").addEventListener("click", downloadZip);
  loadModels();
});
