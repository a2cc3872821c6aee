// Independent C2PA reader for lida-plugin's tests (not c2pa-python: @trustnxt/c2pa-ts, pure TypeScript).
// Usage: node read-manifest.mjs FILE [LABEL]
// Prints one JSON object: {format, manifests, active, valid, codes: {success: [], failure: []}, assertions: [labels],
// ingredients: [{title, relationship, manifest, codes}] (the active manifest's, with their stored validation status),
// assertion: <the decoded content of LABEL in the active manifest, default org.lida.attribution>, error}.
// Exit code 0 when a manifest was read (valid or not), 2 when none or unreadable.
import * as fs from 'node:fs/promises';
import { JPEG, PNG } from '@trustnxt/c2pa-ts/asset';
import { CBORBox, JSONBox, SuperBox } from '@trustnxt/c2pa-ts/jumbf';
import { IngredientAssertion, ManifestStore, ValidationResult } from '@trustnxt/c2pa-ts/manifest';

const [file, label = 'org.lida.attribution'] = process.argv.slice(2);
const out = { file, format: null, manifests: 0, active: null, valid: null, codes: { success: [], failure: [] }, assertions: [], ingredients: [], assertion: null, error: null };

function plain(v) {
  // CBOR maps may decode to Map; tags and typed arrays to objects: make JSON-friendly values.
  if (v instanceof Map) return Object.fromEntries([...v].map(([k, x]) => [String(k), plain(x)]));
  if (Array.isArray(v)) return v.map(plain);
  if (v instanceof Uint8Array) return Buffer.from(v).toString('base64');
  if (v && typeof v === 'object') {
    if ('value' in v && 'tag' in v && Object.keys(v).length === 2) return plain(v.value);
    return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, plain(x)]));
  }
  return v;
}

try {
  const buf = new Uint8Array(await fs.readFile(file));
  /** @type {Asset} */
  let asset;
  if (JPEG.canRead(buf)) { asset = new JPEG(buf); out.format = 'image/jpeg'; }
  else if (PNG.canRead(buf)) { asset = new PNG(buf); out.format = 'image/png'; }
  else { out.error = 'unsupported format'; console.log(JSON.stringify(out)); process.exit(2); }
  const jumbf = asset.getManifestJUMBF();
  if (!jumbf) { out.error = 'no manifest'; console.log(JSON.stringify(out)); process.exit(2); }
  let result;
  let store;
  try {
    store = ManifestStore.read(SuperBox.fromBuffer(jumbf));
    result = await store.validate(asset);
  } catch (e) {
    result = ValidationResult.fromError(e);
  }
  out.valid = result.isValid;
  for (const e of result.statusEntries) (e.success ? out.codes.success : out.codes.failure).push(e.code);
  if (store) {
    out.manifests = store.manifests.length;
    const m = store.getActiveManifest();
    out.active = m?.label ?? null;
    for (const a of m?.assertions?.assertions ?? []) {
      out.assertions.push(a.fullLabel ?? a.label);
      if (a instanceof IngredientAssertion) {
        // each ingredient of the active manifest: does it carry a manifest, and the validation status stored with it
        const stored = [...(a.validationStatus ?? []), ...(a.validationResults?.activeManifest?.failure ?? [])];
        out.ingredients.push({
          title: a.title ?? null,
          relationship: a.relationship ?? null,
          manifest: Boolean(a.activeManifest ?? a.c2pa_manifest),
          codes: stored.map((c) => (typeof c === 'string' ? c : c?.code ?? String(c))),
        });
      }
      if ((a.label === label || a.fullLabel === label) && a.sourceBox) {
        const box = a.sourceBox.contentBoxes.find((b) => b instanceof CBORBox || b instanceof JSONBox);
        if (box) out.assertion = plain(box.content);
      }
    }
  }
  console.log(JSON.stringify(out));
} catch (e) {
  out.error = String(e?.message ?? e);
  console.log(JSON.stringify(out));
  process.exit(2);
}
