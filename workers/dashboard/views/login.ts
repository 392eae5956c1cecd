import { html } from 'hono/html'
import { type Html, layout } from './layout.ts'

/** The login form: the token goes in a POST body, never in a URL. */
export function loginPage(error: string | null = null): Html {
  return layout(
    'deltaport · operator login',
    html`<form class="login" method="post" action="/dashboard/login">
  <h1>deltaport dashboard</h1>
  <p class="muted">Sign in with the edge's operator token (the <code>OPERATOR_TOKEN</code> secret).</p>
  ${error === null ? '' : html`<p class="error" role="alert">${error}</p>`}
  <label for="token">Operator token</label>
  <input id="token" name="token" type="password" autocomplete="current-password" required maxlength="512" autofocus>
  <button type="submit">Sign in</button>
</form>`,
  )
}
