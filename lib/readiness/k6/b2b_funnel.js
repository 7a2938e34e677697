// B2B funnel: N provider journeys, each A7 landing page → A6 signup → listing → billing.
//
// Every journey is one k6 iteration (shared-iterations executor, VUS virtual users). Each
// step records a point of the Rate metric `b2b_step` tagged with the journey's sequence
// number (`seq`) and the step name, so the raw points of `--out json=...` tell exactly
// which journey stopped where; the billing step also records the charge's lineage as
// Trend points (`b2b_<line>_cents`, tagged with seq, charge id and trace id) so the audit
// can recompute every charge. The listing is read back from the `Location` the create
// call answered. Threshold: the signup rate must reach SIGNUP_MIN (k6 exits 99 when it
// does not); the audit's own verdict uses a Wilson interval over the same points.
//
// Every write carries X-Idempotency-Key and X-Trace-Id (`<RUN>-<seq>-<step>`) and the
// synthetic identity's headers and body tags, so its events can be found in the
// telemetry store and kept out of business data.
//
// Environment (pass with `-e NAME=value`):
//   LANDING_URL   required, absolute URL of the landing page (A7)
//   PORTAL_URL    required, base URL of the provider portal (A6)
//   REGISTER_PATH, LISTING_PATH, BILLING_PATH   portal routes (defaults: sandbox routes)
//   N             journeys (default 10);  VUS  virtual users (default 2)
//   MAX_DURATION  k6 duration string bounding the scenario (default 120s)
//   COSTS         comma-separated AI base costs in cents, used in turn (default 1234)
//   CURRENCY      default usd
//   RUN           run token, prefix of keys and trace ids (required)
//   IDENTITY      synthetic identity (default test_provider_e2e_01)
//   TAGS          JSON object of synthetic tags sent as X-<Tag> headers and body tags
//   SIGNUP_MIN    threshold of the signup rate (default 0.9)
//   TIMEOUT_S     per-request timeout in seconds (default 10; k6's own default, 60 s, would let
//                 a hanging step hold its VU and connection for a minute)

import http from 'k6/http';
import exec from 'k6/execution';
import { Rate, Trend } from 'k6/metrics';

function required(name) {
  const value = __ENV[name];
  if (value === undefined || value === '') {
    throw new Error(`environment variable ${name} is required`);
  }
  return value;
}

function positive(name, fallback) {
  const raw = __ENV[name];
  const value = raw === undefined || raw === '' ? fallback : Number(raw);
  if (!Number.isFinite(value) || value <= 0) {
    throw new Error(`${name} must be a positive number, got ${raw}`);
  }
  return value;
}

const LANDING_URL = required('LANDING_URL');
const PORTAL_URL = required('PORTAL_URL').replace(/\/+$/, '');
const REGISTER_PATH = __ENV.REGISTER_PATH || '/api/providers';
const LISTING_PATH = __ENV.LISTING_PATH || '/api/listings';
const BILLING_PATH = __ENV.BILLING_PATH || '/api/billing/usage';
const N = Math.floor(positive('N', 10));
const VUS = Math.min(N, Math.floor(positive('VUS', 2)));
const MAX_DURATION = __ENV.MAX_DURATION || '120s';
const COSTS = (__ENV.COSTS || '1234').split(',').map((c) => {
  const value = Number(c);
  if (!Number.isInteger(value) || value < 1) {
    throw new Error(`COSTS must be positive integers (cents), got ${c}`);
  }
  return value;
});
const CURRENCY = __ENV.CURRENCY || 'usd';
const RUN = required('RUN');
const IDENTITY = __ENV.IDENTITY || 'test_provider_e2e_01';
const TAGS = JSON.parse(__ENV.TAGS || '{}');
const SIGNUP_MIN = positive('SIGNUP_MIN', 0.9);
const TIMEOUT = `${Math.round(positive('TIMEOUT_S', 10) * 1000)}ms`;
const LINES = ['base_cost_cents', 'ai_charge_cents', 'ai_markup_cents', 'provider_fee_cents', 'total_cents'];

const step = new Rate('b2b_step');
const signup = new Rate('b2b_signup');
const lineage = Object.fromEntries(LINES.map((line) => [line, new Trend(`b2b_${line}`)]));

export const options = {
  thresholds: { b2b_signup: [`rate>=${SIGNUP_MIN}`] },
  scenarios: {
    journeys: { executor: 'shared-iterations', vus: VUS, iterations: N, maxDuration: MAX_DURATION },
  },
};

function headerName(tag) {
  return 'X-' + tag.split('_').map((p) => p.charAt(0).toUpperCase() + p.slice(1)).join('-');
}

const SYNTHETIC_HEADERS = Object.fromEntries([
  ...Object.entries(TAGS).map(([k, v]) => [headerName(k), String(v)]),
  ['X-Synthetic-Identity', IDENTITY],
]);

function write(seq, name, path, body) {
  const headers = {
    'Content-Type': 'application/json',
    'X-Idempotency-Key': `${RUN}-${seq}-${name}`,
    'X-Trace-Id': `${RUN}-${seq}-${name}`,
    ...SYNTHETIC_HEADERS,
  };
  const payload = { ...body, tags: { ...TAGS, synthetic_identity: IDENTITY } };
  return http.post(`${PORTAL_URL}${path}`, JSON.stringify(payload),
    { headers, timeout: TIMEOUT, tags: { seq: String(seq), step: name } });
}

function json(res) {
  try {
    return res.json();
  } catch (e) {
    return null;
  }
}

function mark(seq, name, ok) {
  step.add(ok ? 1 : 0, { seq: String(seq), step: name });
  return ok;
}

export default function () {
  const seq = exec.scenario.iterationInTest;
  const tags = { seq: String(seq) };
  const landing = http.get(LANDING_URL,
    { tags: { ...tags, step: 'landing' }, headers: SYNTHETIC_HEADERS, timeout: TIMEOUT });
  if (!mark(seq, 'landing', landing.status === 200)) {
    signup.add(0, tags);
    return;
  }
  const reg = write(seq, 'register', REGISTER_PATH, { name: `QA funnel provider ${RUN}-${seq}` });
  const provider = json(reg);
  const registered = reg.status === 201 && provider !== null && typeof provider.provider_id === 'string';
  signup.add(registered ? 1 : 0, tags);
  if (!mark(seq, 'register', registered)) {
    return;
  }
  const lst = write(seq, 'listing', LISTING_PATH, {
    provider_id: provider.provider_id, title: `QA funnel listing ${RUN}-${seq}`, price_cents: 100,
    currency: CURRENCY, status: 'published',
  });
  const listing = json(lst);
  if (!mark(seq, 'listing', lst.status === 201 && listing !== null && typeof listing.listing_id === 'string')) {
    return;
  }
  const location = lst.headers.Location || `${LISTING_PATH}/${listing.listing_id}`;
  const back = http.get(location.startsWith('http') ? location : `${PORTAL_URL}${location}`,
    { tags: { ...tags, step: 'listing_readback' }, headers: SYNTHETIC_HEADERS, timeout: TIMEOUT });
  const readBack = json(back);
  mark(seq, 'listing_readback', back.status === 200 && readBack !== null && readBack.status === 'published');
  const bill = write(seq, 'billing', BILLING_PATH, {
    provider_id: provider.provider_id, listing_id: listing.listing_id,
    base_cost_cents: COSTS[seq % COSTS.length], currency: CURRENCY,
  });
  const charge = json(bill);
  const billed = bill.status === 201 && charge !== null && charge.lineage !== undefined;
  if (!mark(seq, 'billing', billed)) {
    return;
  }
  const lineTags = { ...tags, charge_id: String(charge.charge_id), trace_id: `${RUN}-${seq}-billing`,
    fee_pct: String(charge.lineage.provider_fee_pct), markup_x: String(charge.lineage.ai_markup_x) };
  for (const line of LINES) {
    const value = Number(charge.lineage[line]);
    if (Number.isFinite(value)) {
      lineage[line].add(value, lineTags);
    }
  }
}
