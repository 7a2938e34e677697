"""A2 guided onboarding, last step: the learner's first AI action, asked from the browser.

After sign-in (A1), checkout (A5) and the first page (A3), the learner is guided to the
moment the product first gives value: ``GET /onboarding/first-action`` shows the steps
done so far, a short form (what the tutor should do, on which topic) and one button.
The page's script calls ``POST /api/ai/actions`` itself (same origin, A2 session
cookie) with the contract headers the route demands:

- ``X-Idempotency-Key`` — one key per page view and request body, so a double click or
  a retry of a request that got no answer replays instead of taking a second credit; a
  changed body gets a new key (the same key with another body would be a 422);
- ``X-Trace-Id`` — the trace id of the page request, so the action, its
  ``credit_decrement`` and ``activation_first_use`` events and the page that led to them
  share one trace.

The answer is shown in place (``[data-testid=ai-result]``, written as text, never as
HTML); a refusal is shown as ``#error`` — created only when there is one, so its mere
presence means the step failed.
"""

from __future__ import annotations

import html

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from sandbox.apps.a2_actions import ACTIONS, ACTIONS_ROUTE
from sandbox.apps.a2_onboarding import FIRST_ACTION_PATH, current_learner, error_page, page
from sandbox.common.context import ctx_of

SUGGESTED_TOPIC = "confidence intervals"
ACTION_LABELS = {"explain": "Explain a topic", "quiz": "Quiz me", "summarize": "Summarize"}

GUIDE_SCRIPT = """
(function () {
  var main = document.querySelector("[data-testid=guided-onboarding]");
  var form = document.getElementById("first-action-form");
  var button = document.getElementById("action-submit");
  var result = document.querySelector("[data-testid=ai-result]");
  var sentBody = null, key = null;
  function newKey() {
    var bytes = new Uint8Array(16);
    crypto.getRandomValues(bytes);
    return "first-action-" + Array.from(bytes, function (b) { return b.toString(16).padStart(2, "0"); }).join("");
  }
  function fail(message) {
    var shown = document.getElementById("error");
    if (!shown) {
      shown = document.createElement("p");
      shown.id = "error";
      shown.setAttribute("role", "alert");
      form.after(shown);
    }
    shown.textContent = message;
    button.disabled = false;
  }
  function show(answer) {
    var old = document.getElementById("error");
    if (old) { old.remove(); }
    document.getElementById("ai-output").textContent = answer.output;
    document.getElementById("credits").textContent = answer.credits_left + " AI credits left";
    result.dataset.actionId = answer.action_id;
    result.dataset.firstUse = String(answer.first_use);
    result.hidden = false;
    document.querySelector("[data-step=first-action]").dataset.done = "true";
    button.disabled = false;
  }
  form.addEventListener("submit", function (event) {
    event.preventDefault();
    var body = JSON.stringify({action: form.elements.action.value, input: form.elements.input.value});
    if (body !== sentBody) { key = newKey(); sentBody = body; }
    button.disabled = true;
    fetch(form.dataset.endpoint, {method: "POST", credentials: "same-origin", body: body,
      headers: {"Content-Type": "application/json", "X-Idempotency-Key": key, "X-Trace-Id": main.dataset.traceId}})
      .then(function (r) {
        return r.json().catch(function () { return {}; }).then(function (answer) {
          if (r.status === 201) { show(answer); } else { fail(answer.error || ("the AI tutor answered " + r.status)); }
        });
      })
      .catch(function (err) { fail("the AI tutor could not be reached: " + err.message); });
  });
})();
"""


def _step(name: str, label: str, done: bool) -> str:
    mark = " ✓" if done else ""
    return f'<li data-step="{name}" data-done="{str(done).lower()}">{html.escape(label)}{mark}</li>'


async def first_action_page(request: Request) -> Response:
    """The guided step: progress so far, the action form and the place its answer appears."""
    learner = current_learner(request)
    if learner is None:
        return error_page(401, "you are not signed in to the student app")
    used = ctx_of(request).db.query("SELECT count(*) AS n FROM ai_actions WHERE user_id = ?",
                                    (learner["user_id"],))[0]["n"]
    steps = "".join((
        _step("account", "Create your account", True),
        _step("pack", "Unlock the Micro QA pack", bool(learner["checkout_session_id"])),
        _step("first-page", "Get your first page", bool(learner["first_page"])),
        _step("first-action", "Ask your AI tutor", used > 0),
    ))
    options = "".join(f'<option value="{name}">{html.escape(ACTION_LABELS.get(name, name))}</option>'
                      for name in ACTIONS)
    trace = html.escape(request.state.trace_id)
    return page("Ask your AI tutor", (
        f'<main data-testid="guided-onboarding" data-trace-id="{trace}">'
        f'<ol id="onboarding-steps">{steps}</ol>'
        "<h1>Ask your AI tutor</h1><p>Pick what the tutor should do and a topic; one action takes one credit.</p>"
        f'<form id="first-action-form" data-endpoint="{ACTIONS_ROUTE}">'
        f'<label for="action-kind">What should the tutor do?</label><select id="action-kind" name="action">{options}'
        '</select><label for="action-input">Topic</label>'
        f'<textarea id="action-input" name="input" maxlength="2000" required>{html.escape(SUGGESTED_TOPIC)}</textarea>'
        '<button type="submit" id="action-submit">Ask the AI tutor (1 credit)</button></form>'
        f'<p id="credits">{learner["credits"]} AI credits left</p>'
        '<section data-testid="ai-result" hidden><h2>Your tutor says</h2><p id="ai-output"></p></section>'
        f"</main><script>{GUIDE_SCRIPT}</script>"))


def guide_routes() -> list[BaseRoute]:
    return [Route(FIRST_ACTION_PATH, first_action_page, methods=["GET"])]
