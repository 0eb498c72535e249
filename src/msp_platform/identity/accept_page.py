"""``GET /accept-invitation``: the page an invitation email links to (``{MSP_ISSUER}/accept-invitation?token=``).

A self-contained form: the invitee chooses a password and the page posts it with the token to
``POST /api/v1/auth/accept-invitation``, showing the problem detail when the API refuses. Deployments with
their own console point ``MSP_INVITATION_ACCEPT_URL`` at it instead. The token is in the URL, so the page is
never cached, sends no Referer, drops the token from the address bar once read and runs only its own script.
"""

from __future__ import annotations

import secrets

from litestar import Controller, MediaType, Response, get

from msp_platform.auth.endpoints import PUBLIC
from msp_platform.auth.passwords import MIN_PASSWORD_LENGTH

ACCEPT_API = "/api/v1/auth/accept-invitation"

_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>Set your password</title>
<style nonce="{nonce}">
body {{ font: 16px/1.5 system-ui, sans-serif; max-width: 28rem; margin: 4rem auto; padding: 0 1rem; }}
label {{ display: block; margin-top: 1rem; }}
input {{ width: 100%; padding: .5rem; font: inherit; box-sizing: border-box; }}
button {{ margin-top: 1.5rem; padding: .6rem 1.2rem; font: inherit; }}
#result {{ margin-top: 1.5rem; }}
.error {{ color: #a00; }}
</style>
</head>
<body>
<h1>Set your password</h1>
<p>You were invited to the MSP service desk. Choose a password of at least {min_length} characters.</p>
<form id="accept">
<label>Password <input id="password" type="password" autocomplete="new-password" required minlength="{min_length}"></label>
<label>Repeat it <input id="repeat" type="password" autocomplete="new-password" required minlength="{min_length}"></label>
<button type="submit">Set password</button>
</form>
<p id="result" role="status"></p>
<script nonce="{nonce}">
const params = new URLSearchParams(location.search);
const token = params.get("token") || "";
history.replaceState(null, "", location.pathname);
const form = document.getElementById("accept");
const result = document.getElementById("result");
function show(text, error) {{
  result.textContent = text;
  result.className = error ? "error" : "";
}}
if (!token) {{
  form.hidden = true;
  show("This link has no invitation token. Copy the whole link from the email, or ask for a new invitation.", true);
}}
form.addEventListener("submit", async (event) => {{
  event.preventDefault();
  const password = document.getElementById("password").value;
  if (password !== document.getElementById("repeat").value) {{
    show("The two passwords differ.", true);
    return;
  }}
  const response = await fetch("{api}", {{
    method: "POST",
    headers: {{"content-type": "application/json"}},
    body: JSON.stringify({{token, password}}),
  }});
  const body = await response.json().catch(() => ({{}}));
  if (response.ok) {{
    form.hidden = true;
    show("Your password is set. Sign in as " + body.email + " (organization: " + body.tenant + ").", false);
  }} else {{
    const fields = (body.errors || []).map((e) => e.message).join(" ");
    show((body.detail || "The invitation could not be accepted.") + " " + fields, true);
  }}
}});
</script>
</body>
</html>
"""


class AcceptInvitationPage(Controller):
    path = "/accept-invitation"
    opt = PUBLIC

    @get("/", include_in_schema=False, sync_to_thread=False)
    def page(self) -> Response[str]:
        nonce = secrets.token_urlsafe(16)
        return Response(
            _PAGE.format(nonce=nonce, api=ACCEPT_API, min_length=MIN_PASSWORD_LENGTH),
            media_type=MediaType.HTML,
            headers={
                "Content-Security-Policy": (
                    f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; "
                    "connect-src 'self'; form-action 'none'; base-uri 'none'; frame-ancestors 'none'"
                ),
                "Referrer-Policy": "no-referrer",
                "Cache-Control": "no-store",
                "X-Content-Type-Options": "nosniff",
            },
        )
