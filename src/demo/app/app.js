// The demo app: it never sees a token. It asks the gateway who is logged in, calls the API
// through the session and logs out; every call carries the CSRF header the gateway requires.
const csrf = { 'X-CSRF': '1' };
const status = document.getElementById('status');
const out = document.getElementById('out');
const show = (signedIn) => {
  document.getElementById('login').hidden = signedIn;
  document.getElementById('call').hidden = !signedIn;
  document.getElementById('logout').hidden = !signedIn;
};

async function refresh() {
  const response = await fetch('/auth/session', { headers: csrf });
  if (response.ok) {
    const session = await response.json();
    const until = new Date(session.expires_at * 1000).toLocaleTimeString();
    status.textContent = `Signed in as ${session.sub} (scope: ${session.scope}); session token until ${until}.`;
    show(true);
  } else {
    status.textContent = 'Not signed in.';
    show(false);
  }
}

document.getElementById('call').addEventListener('click', async () => {
  const response = await fetch('/app/api/accounts/1', { headers: csrf });
  out.textContent = `GET /app/api/accounts/1 -> ${response.status}\n${await response.text()}`;
});

document.getElementById('logout').addEventListener('click', async () => {
  const response = await fetch('/auth/logout', { method: 'POST', headers: csrf });
  const answer = await response.json();
  if (answer.end_session_url) {
    window.location.assign(answer.end_session_url);
  } else {
    await refresh();
  }
});

refresh();
