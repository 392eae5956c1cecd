import { type Context, Hono } from 'hono'
import { csrf } from 'hono/csrf'
import type { AppEnv } from '../app-env.ts'
import { readLoginToken } from '../dashboard/login-form.ts'
import {
  authenticateOperator,
  endSession,
  isOperatorToken,
  requireOperator,
  startSession,
} from '../dashboard/operator-auth.ts'
import { loadDashboard } from '../dashboard/page-data.ts'
import { dashboardPage } from '../dashboard/views/dashboard.ts'
import type { Html } from '../dashboard/views/layout.ts'
import { loginPage } from '../dashboard/views/login.ts'
import { Problem } from '../http/problem.ts'

/** Nothing but this document's own inline CSS and SVG may load; no scripts at all. */
const SECURITY_HEADERS = {
  'content-security-policy':
    "default-src 'none'; style-src 'unsafe-inline'; img-src data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
  // The same as frame-ancestors 'none', for browsers that predate CSP level 2.
  'x-frame-options': 'DENY',
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'no-referrer',
  'cache-control': 'no-store',
}

async function page(c: Context<AppEnv>, body: Html, status: 200 | 401 | 429 = 200): Promise<Response> {
  for (const [name, value] of Object.entries(SECURITY_HEADERS)) c.header(name, value)
  return c.html(await body, status)
}

const showLogin = (c: Context<AppEnv>) => page(c, loginPage(), 401)

/**
 * GET /dashboard: the operator's view (OPERATOR_TOKEN as a bearer token, or the session cookie the
 * login form sets). Browsers without a session get the login form; API clients a 401 problem.
 */
export const dashboardRouter = new Hono<AppEnv>()
  .get('/login', async (c) => {
    if ((await authenticateOperator(c)) !== null) return c.redirect('/dashboard', 303)
    return page(c, loginPage())
  })
  // Form posts must come from this origin (Origin header check): no cross-site login or logout.
  .post('/login', csrf(), async (c) => {
    const token = await readLoginToken(c.req.raw)
    let accepted: boolean
    try {
      accepted = token !== null && (await isOperatorToken(c, token))
    } catch (error) {
      // Over the per-address limit: the browser gets the form back saying so, not a JSON problem.
      if (!(error instanceof Problem) || error.status !== 429) throw error
      for (const [name, value] of Object.entries(error.headers)) c.header(name, value)
      return page(c, loginPage('Too many attempts from this address. Wait a minute, then try again.'), 429)
    }
    if (!accepted) return page(c, loginPage('That token is not the operator token of this edge.'), 401)
    await startSession(c)
    c.header('cache-control', 'no-store')
    return c.redirect('/dashboard', 303)
  })
  .post('/logout', csrf(), async (c) => {
    await endSession(c)
    return c.redirect('/dashboard/login', 303)
  })
  .get('/', requireOperator(showLogin), async (c) => page(c, dashboardPage(await loadDashboard(c.env))))
