// GROK's page: two image drops, biomarker fields from the schema, a streamed report with grounded numbers.
// Everything the model writes is inserted as text (textContent), never as HTML.
"use strict";

const MODALITIES = ["oct", "cfp"];
const state = { images: {}, fields: [], schema: null, key: sessionStorage.getItem("grok-api-key") || "" };
const $ = (id) => document.getElementById(id);

function headers() {
  const h = { "Content-Type": "application/json" };
  if (state.key) h.Authorization = "Bearer " + state.key;
  return h;
}

async function loadSchema() {
  const response = await fetch("/v1/schema", { headers: headers() });
  if (response.status === 401) {
    $("auth").hidden = false;
    $("auth-message").textContent = state.key ? "That key was refused." : "";
    return;
  }
  $("auth").hidden = true;
  state.schema = await response.json();
  $("model").textContent = "model: " + state.schema.model;
  buildFields(state.schema.fields);
  for (const modality of MODALITIES) {
    if (!state.schema.modalities.includes(modality)) $("drop-" + modality).hidden = true;
  }
  updateButton();
}

// ---------------------------------------------------------------------------------------------- biomarker fields
function buildFields(fields) {
  const container = $("fields");
  container.replaceChildren();
  state.fields = fields;
  for (const field of fields) {
    const wrapper = document.createElement("div");
    wrapper.className = "field";
    const label = document.createElement("label");
    label.htmlFor = "field-" + field.name;
    label.textContent = field.display;
    const control = document.createElement("div");
    control.className = "control";
    let input;
    if (field.dtype === "category") {
      input = document.createElement("select");
      input.append(new Option("—", ""));
      for (const category of field.categories) input.append(new Option(category, category));
    } else {
      input = document.createElement("input");
      input.type = "number";
      input.step = "any";
      if (field.valid_range) {
        input.min = field.valid_range[0];
        input.max = field.valid_range[1];
      }
      if (field.reference) {
        input.placeholder = field.reference[0] + "–" + field.reference[1];
        input.title = "normal range " + input.placeholder + (field.unit ? " " + field.unit : "");
      }
    }
    input.id = "field-" + field.name;
    input.name = field.name;
    input.addEventListener("input", () => { validateFields(); updateButton(); });
    control.append(input);
    if (field.unit) {
      const unit = document.createElement("span");
      unit.className = "unit";
      unit.textContent = field.unit;
      control.append(unit);
    }
    const error = document.createElement("p");
    error.className = "error";
    error.id = "error-biomarkers-" + field.name;
    wrapper.append(label, control, error);
    container.append(wrapper);
  }
}

// The row to send (null when no value is entered) and whether every entered value is valid.
function validateFields() {
  const row = {};
  let valid = true;
  for (const field of state.fields) {
    const input = $("field-" + field.name);
    const error = $("error-biomarkers-" + field.name);
    error.textContent = "";
    input.classList.remove("invalid");
    if (input.value === "") continue;
    if (field.dtype === "category") {
      row[field.name] = input.value;
      continue;
    }
    const value = Number(input.value);
    const range = field.valid_range;
    if (!Number.isFinite(value)) {
      error.textContent = "not a number";
    } else if (range && (value < range[0] || value > range[1])) {
      error.textContent = "must be between " + range[0] + " and " + range[1] + (field.unit ? " " + field.unit : "");
    } else {
      row[field.name] = value;
      continue;
    }
    input.classList.add("invalid");
    valid = false;
  }
  const given = Object.keys(row).length > 0;
  if (given) {
    for (const field of state.fields) {
      if (field.required && !(field.name in row)) {
        $("error-biomarkers-" + field.name).textContent = "required with any other value";
        $("field-" + field.name).classList.add("invalid");
        valid = false;
      }
    }
  }
  return { row: given ? row : null, valid };
}

// ---------------------------------------------------------------------------------------------- images
function setImage(modality, file) {
  const error = $("error-images-" + modality);
  error.textContent = "";
  if (!file) return;
  const limit = state.schema ? state.schema.limits.max_image_bytes : Infinity;
  if (file.size > limit) {
    error.textContent = "image is " + file.size.toLocaleString() + " bytes, over the limit of " + limit.toLocaleString();
    return;
  }
  const reader = new FileReader();
  reader.onload = () => {
    state.images[modality] = reader.result;
    const preview = $("preview-" + modality);
    preview.src = reader.result;
    preview.hidden = false;
    $("name-" + modality).textContent = file.name;
    $("clear-" + modality).hidden = false;
    $("drop-" + modality).classList.add("filled");
    updateButton();
  };
  reader.onerror = () => { error.textContent = "could not read the file"; };
  reader.readAsDataURL(file);
}

function clearImage(modality) {
  delete state.images[modality];
  $("preview-" + modality).hidden = true;
  $("preview-" + modality).removeAttribute("src");
  $("name-" + modality).textContent = "";
  $("clear-" + modality).hidden = true;
  $("file-" + modality).value = "";
  $("drop-" + modality).classList.remove("filled");
  updateButton();
}

function wireDrop(modality) {
  const zone = $("drop-" + modality);
  zone.addEventListener("dragover", (event) => { event.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("over");
    setImage(modality, event.dataTransfer.files[0]);
  });
  $("file-" + modality).addEventListener("change", (event) => setImage(modality, event.target.files[0]));
  $("clear-" + modality).addEventListener("click", () => clearImage(modality));
}

function updateButton() {
  const ready = state.schema && Object.keys(state.images).length > 0 && validateFields().valid;
  $("generate").disabled = !ready || state.busy;
}

// ---------------------------------------------------------------------------------------------- the report
function showFieldError(param, message) {
  const target = param && $("error-" + param.replace(".", "-"));
  if (target) target.textContent = message;
  else $("request-error").textContent = message;
}

async function generate() {
  const { row, valid } = validateFields();
  if (!valid) return;
  $("request-error").textContent = "";
  for (const modality of MODALITIES) $("error-images-" + modality).textContent = "";
  const body = { images: { ...state.images }, stream: true };
  if (row) body.biomarkers = row;
  state.busy = true;
  updateButton();
  $("progress").hidden = false;
  $("progress-text").textContent = "Generating…";
  showResultImages();
  $("result").hidden = false;
  $("report").replaceChildren();
  $("findings").replaceChildren();
  $("conclusion").textContent = "";
  $("conclusion-note").textContent = "";
  $("legend").hidden = true;
  $("grounding-note").textContent = "";
  try {
    const response = await fetch("/v1/reports", { method: "POST", headers: headers(), body: JSON.stringify(body) });
    if (!response.ok) {
      const error = (await response.json()).error || {};
      if (response.status === 401) { $("auth").hidden = false; }
      showFieldError(error.param, error.message || "request failed (HTTP " + response.status + ")");
      $("result").hidden = true;
      return;
    }
    await readEvents(response);
  } catch (error) {
    $("request-error").textContent = "the server could not be reached: " + error;
  } finally {
    state.busy = false;
    $("progress").hidden = true;
    updateButton();
  }
}

async function readEvents(response) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  let streamed = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const line = buffer.slice(0, end).trim();
      buffer = buffer.slice(end + 2);
      if (!line.startsWith("data:")) continue;
      const data = line.slice(5).trim();
      if (data === "[DONE]") return;
      const event = JSON.parse(data);
      if (event.type === "delta") {
        streamed += event.text;
        $("report").textContent = streamed;
        $("progress-text").textContent = "Generating… " + streamed.length.toLocaleString() + " characters";
      } else if (event.type === "report") {
        renderReport(event);
      } else if (event.type === "error") {
        $("request-error").textContent = event.error.message;
      }
    }
  }
}

function showResultImages() {
  for (const modality of MODALITIES) {
    const image = state.images[modality];
    $("figure-" + modality).hidden = !image;
    if (image) $("result-" + modality).src = image;
  }
}

function renderReport(result) {
  const box = $("report");
  box.replaceChildren();
  const text = result.report;
  const quantities = ((result.grounding && result.grounding.quantities) || [])
    .filter((q) => Number.isInteger(q.start) && Number.isInteger(q.end))
    .sort((a, b) => a.start - b.start);
  let cursor = 0;
  for (const quantity of quantities) {
    if (quantity.start < cursor) continue; // overlapping spans: keep the first
    box.append(document.createTextNode(text.slice(cursor, quantity.start)));
    box.append(quantitySpan(text.slice(quantity.start, quantity.end), quantity));
    cursor = quantity.end;
  }
  box.append(document.createTextNode(text.slice(cursor)));
  $("legend").hidden = quantities.length === 0;
  $("grounding-note").textContent = result.grounding
    ? quantities.length + " quoted quantit" + (quantities.length === 1 ? "y" : "ies") + " grounded"
    : "This export's reports carry no grounding: numbers are shown as the model wrote them.";
  const findings = $("findings");
  findings.replaceChildren();
  for (const finding of result.findings) {
    const item = document.createElement("li");
    item.textContent = finding.display;
    findings.append(item);
  }
  if (!result.findings.length) findings.append(Object.assign(document.createElement("li"), { textContent: "none stated" }));
  $("conclusion").textContent = result.diagnosis.display.length ? result.diagnosis.display.join(", ") : "not stated";
  $("conclusion-note").textContent = "read from the report text by the benchmark's parser (" + result.diagnosis.source + ")";
  if (result.finish_reason === "length") {
    $("grounding-note").textContent += " · stopped at the token limit";
  }
}

function describe(quantity) {
  const unit = quantity.unit ? " " + quantity.unit : "";
  const lines = [quantity.display + ": " + quantity.value + unit];
  let source = quantity.source_name || quantity.source;
  if (quantity.source === "readout" && quantity.estimate !== null && quantity.estimate !== undefined) {
    source += " (read-out " + quantity.estimate + unit + ")";
  }
  if (quantity.kind && quantity.kind !== "value") source += " · " + quantity.kind + " bound";
  lines.push(source);
  if (quantity.status && quantity.status !== "reference" && quantity.status !== "unknown") lines.push(quantity.status);
  return lines;
}

function quantitySpan(shown, quantity) {
  const span = document.createElement("mark");
  span.className = "q src-" + quantity.source;
  span.textContent = shown;
  span.tabIndex = 0;
  span.dataset.key = quantity.key;
  span.dataset.source = quantity.source;
  span.setAttribute("aria-label", shown + ": " + describe(quantity).join(", "));
  const show = () => showTooltip(span, describe(quantity));
  span.addEventListener("mouseenter", show);
  span.addEventListener("focus", show);
  span.addEventListener("mouseleave", hideTooltip);
  span.addEventListener("blur", hideTooltip);
  return span;
}

function showTooltip(anchor, lines) {
  const tooltip = $("tooltip");
  tooltip.replaceChildren(...lines.flatMap((line, i) => (i ? [document.createElement("br"), line] : [line])));
  const box = anchor.getBoundingClientRect();
  tooltip.hidden = false;
  const left = Math.max(8, Math.min(box.left, document.documentElement.clientWidth - tooltip.offsetWidth - 8));
  tooltip.style.left = window.scrollX + left + "px";
  tooltip.style.top = window.scrollY + box.bottom + 6 + "px";
}

function hideTooltip() {
  $("tooltip").hidden = true;
}

// ---------------------------------------------------------------------------------------------- start
document.addEventListener("DOMContentLoaded", () => {
  MODALITIES.forEach(wireDrop);
  $("generate").addEventListener("click", generate);
  $("auth-save").addEventListener("click", () => {
    state.key = $("api-key").value.trim();
    sessionStorage.setItem("grok-api-key", state.key);
    loadSchema();
  });
  loadSchema();
});
