import { env, exports } from 'cloudflare:workers'
import { generateSignedCookie } from 'hono/cookie'
import { describe, expect, it } from 'vitest'
import { ProblemDetails } from '../../schemas/problem.ts'
import { SESSION_COOKIE } from '../dashboard/operator-auth.ts'
import { dashboardHtml, OPERATOR_TOKEN, operatorAuth } from './dashboard-helpers.ts'
import { callApp } from './delta-helpers.ts'
import { kvInOutage } from './failing-kv.ts'
import { call, auth as publishAuth } from './publish-helpers.ts'

const ORIGIN = 'https://edge.test'
/** A well-formed session id (128 bits, hex) for hand-signed cookies. */
const SESSION_ID = '0123456789abcdef0123456789abcdef'

function login(token: string, headers: Record<string, string> = {}) {
  return call('/dashboard/login', {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded', origin: ORIGIN, ...headers },
    body: new URLSearchParams({ token }).toString(),
    redirect: 'manual',
  })
}

/** The `name=value` pair of a Set-Cookie header, as a browser would send it back. */
function cookiePair(response: Response): string {
  const header = response.headers.get('set-cookie') ?? ''
  return header.split(';')[0] ?? ''
}

describe('dashboard operator auth', () => {
  it('shows browsers the login page and API clients a 401 problem', async () => {
    const browser = await call('/dashboard', { headers: { accept: 'text/html,application/xhtml+xml' } })
    expect(browser.status).toBe(401)
    expect(browser.headers.get('content-type')).toContain('text/html')
    const page = await browser.text()
    expect(page).toContain('<form class="login" method="post" action="/dashboard/login">')
    expect(page).not.toContain('Artifacts, versions')

    const api = await call('/dashboard', { headers: { accept: 'application/json' } })
    expect(api.status).toBe(401)
    expect(api.headers.get('content-type')).toBe('application/problem+json')
    expect(api.headers.get('www-authenticate')).toContain('Bearer')
    expect(((await api.json()) as { type: string }).type).toContain('unauthorized')
  })

  it('accepts the operator bearer token and nothing else', async () => {
    const page = await dashboardHtml(operatorAuth)
    expect(page).toContain('Artifacts, versions and delta savings')
    // The maintainer's publish token is not an operator token, and neither is a near miss.
    for (const authorization of [publishAuth.authorization, `Bearer ${OPERATOR_TOKEN}x`, 'Basic abc']) {
      const response = await call('/dashboard', { headers: { authorization } })
      expect(response.status, authorization).toBe(401)
    }
  })

  it('serves the page with a strict CSP and no caching', async () => {
    const response = await call('/dashboard', { headers: operatorAuth })
    expect(response.status).toBe(200)
    expect(response.headers.get('content-security-policy')).toContain("default-src 'none'")
    expect(response.headers.get('content-security-policy')).toContain("frame-ancestors 'none'")
    // Browsers that predate CSP frame-ancestors honour only X-Frame-Options (clickjacking).
    expect(response.headers.get('x-frame-options')).toBe('DENY')
    expect(response.headers.get('cache-control')).toBe('no-store')
    const page = await response.text()
    expect(page).not.toMatch(/<script|<link|src="http/i)
  })

  it('logs in through the form with a signed HttpOnly SameSite=Strict Secure cookie', async () => {
    const response = await login(OPERATOR_TOKEN)
    expect(response.status).toBe(303)
    expect(response.headers.get('location')).toBe('/dashboard')
    const setCookie = response.headers.get('set-cookie') ?? ''
    expect(setCookie).toMatch(new RegExp(`^${SESSION_COOKIE}=`))
    expect(setCookie).toContain('HttpOnly')
    expect(setCookie).toContain('SameSite=Strict')
    expect(setCookie).toContain('Secure')
    expect(setCookie).toContain('Path=/dashboard')
    // The token itself never travels in the cookie.
    expect(setCookie).not.toContain(OPERATOR_TOKEN)

    const page = await dashboardHtml({ cookie: cookiePair(response) })
    expect(page).toContain('Runtime config')
    // Signed in already: the login form sends the browser on to the dashboard.
    const again = await call('/dashboard/login', {
      headers: { cookie: cookiePair(response) },
      redirect: 'manual',
    })
    expect(again.status).toBe(303)
    expect(again.headers.get('location')).toBe('/dashboard')
  })

  it('refuses a wrong token, a cross-site form post, and a tampered or expired cookie', async () => {
    const wrong = await login('not-the-token')
    expect(wrong.status).toBe(401)
    expect(wrong.headers.get('set-cookie')).toBeNull()
    expect(await wrong.text()).toContain('not the operator token')

    const huge = await call('/dashboard/login', {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded', origin: ORIGIN },
      body: `token=${'a'.repeat(5000)}`,
    })
    expect(huge.status).toBe(413)
    const notAForm = await call('/dashboard/login', {
      method: 'POST',
      headers: { 'content-type': 'application/json', origin: ORIGIN },
      body: JSON.stringify({ token: OPERATOR_TOKEN }),
    })
    expect(notAForm.status).toBe(401)
    expect(notAForm.headers.get('set-cookie')).toBeNull()

    const crossSite = await login(OPERATOR_TOKEN, { origin: 'https://evil.example' })
    expect(crossSite.status).toBe(403)
    expect(await crossSite.json()).toMatchObject({ type: expect.stringContaining('forbidden') })
    expect(crossSite.headers.get('set-cookie')).toBeNull()

    const good = cookiePair(await login(OPERATOR_TOKEN))
    const tampered = good.replace(
      /dashboard-session-v2%3A(\d)/,
      (_, d: string) => `dashboard-session-v2%3A${(Number(d) + 1) % 10}`,
    )
    expect(tampered).not.toBe(good)
    const forged = await call('/dashboard', { headers: { accept: 'text/html', cookie: tampered } })
    expect(forged.status).toBe(401)

    // Correctly signed with the real token, but expired: the expiry is checked server-side.
    const past = Math.floor(Date.now() / 1000) - 60
    const expired =
      (
        await generateSignedCookie(
          SESSION_COOKIE,
          `dashboard-session-v2:${past}:${SESSION_ID}`,
          env.OPERATOR_TOKEN,
        )
      ).split(';')[0] ?? ''
    const stale = await call('/dashboard', { headers: { accept: 'text/html', cookie: expired } })
    expect(stale.status).toBe(401)
    expect(await stale.text()).toContain('action="/dashboard/login"')

    // A cookie signed with another key (e.g. the publish token) is not a session either.
    const future = Math.floor(Date.now() / 1000) + 600
    const otherKey =
      (
        await generateSignedCookie(
          SESSION_COOKIE,
          `dashboard-session-v2:${future}:${SESSION_ID}`,
          env.PUBLISH_TOKEN,
        )
      ).split(';')[0] ?? ''
    expect((await call('/dashboard', { headers: { cookie: otherKey } })).status).toBe(401)
    // The same cookie signed with the operator token is a session (so the refusals above are not vacuous).
    const wellFormed =
      (
        await generateSignedCookie(
          SESSION_COOKIE,
          `dashboard-session-v2:${future}:${SESSION_ID}`,
          env.OPERATOR_TOKEN,
        )
      ).split(';')[0] ?? ''
    expect((await call('/dashboard', { headers: { cookie: wellFormed } })).status).toBe(200)
  })

  it('sets the cookie without Secure over plain http (wrangler dev), and refuses everything without a token configured', async () => {
    const plain = await exports.default.fetch(
      new Request('http://edge.test/dashboard/login', {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded', origin: 'http://edge.test' },
        body: new URLSearchParams({ token: OPERATOR_TOKEN }).toString(),
        redirect: 'manual',
      }),
    )
    expect(plain.status).toBe(303)
    const setCookie = plain.headers.get('set-cookie') ?? ''
    expect(setCookie).toContain('HttpOnly')
    expect(setCookie).not.toContain('Secure')

    const unconfigured: Env = { ...env, OPERATOR_TOKEN: '' }
    const page = await callApp('/dashboard', { headers: operatorAuth }, unconfigured)
    expect(page.response.status).toBe(500)
    const login = await callApp(
      '/dashboard/login',
      {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded', origin: 'https://edge.test' },
        body: 'token=anything',
      },
      unconfigured,
    )
    expect(login.response.status).toBe(500)
    expect(login.response.headers.get('set-cookie')).toBeNull()
  })

  it('revokes the session on logout: a copy of the cookie is refused afterwards, other sessions go on', async () => {
    const session = cookiePair(await login(OPERATOR_TOKEN))
    const other = cookiePair(await login(OPERATOR_TOKEN))
    expect(session).not.toBe(other)
    expect((await call('/dashboard', { headers: { cookie: session } })).status).toBe(200)
    const logout = await call('/dashboard/logout', {
      method: 'POST',
      headers: { origin: ORIGIN, 'content-type': 'application/x-www-form-urlencoded', cookie: session },
      body: '',
      redirect: 'manual',
    })
    expect(logout.status).toBe(303)
    // The browser dropped the cookie; whoever copied it (a shared machine, a leaked header) still has it.
    const copied = await call('/dashboard', { headers: { accept: 'text/html', cookie: session } })
    expect(copied.status).toBe(401)
    expect(await copied.text()).toContain('action="/dashboard/login"')
    const api = await call('/dashboard', { headers: { accept: 'application/json', cookie: session } })
    expect(api.status).toBe(401)
    await api.body?.cancel()
    // The login page does not wave the revoked cookie through to the dashboard either.
    const loginPage = await call('/dashboard/login', { headers: { cookie: session }, redirect: 'manual' })
    expect(loginPage.status).toBe(200)
    await loginPage.body?.cancel()
    // Logging out one browser does not log out the others.
    expect((await call('/dashboard', { headers: { cookie: other } })).status).toBe(200)
  })

  it('a revocation store that cannot be read or written is a 503, never a session let through or a logout that did not happen', async () => {
    const session = cookiePair(await login(OPERATOR_TOKEN))
    const outage = { ...env, AUTH_LOCKOUTS: kvInOutage(env.AUTH_LOCKOUTS) } as Env
    const page = await callApp('/dashboard', { headers: { cookie: session } }, outage)
    expect(page.response.status).toBe(503)
    expect(page.response.headers.get('retry-after')).not.toBeNull()
    const logout = await callApp(
      '/dashboard/logout',
      { method: 'POST', headers: { origin: ORIGIN, cookie: session }, redirect: 'manual' },
      outage,
    )
    expect(logout.response.status).toBe(503)
    // The browser keeps its cookie: the operator is not told they are signed out when they are not.
    expect(logout.response.headers.get('set-cookie')).toBeNull()
    // The bearer token does not need the store.
    expect((await callApp('/dashboard', { headers: operatorAuth }, outage)).response.status).toBe(200)
  })

  it('logs out by clearing the cookie', async () => {
    const response = await call('/dashboard/logout', {
      method: 'POST',
      headers: { origin: ORIGIN, 'content-type': 'application/x-www-form-urlencoded' },
      body: '',
      redirect: 'manual',
    })
    expect(response.status).toBe(303)
    expect(response.headers.get('location')).toBe('/dashboard/login')
    expect(response.headers.get('set-cookie')).toMatch(new RegExp(`^${SESSION_COOKIE}=;.*Max-Age=0`))
  })

  it('limits token attempts per address, right or wrong, on the form and as a bearer; other addresses go on', async () => {
    const guesser = { 'cf-connecting-ip': '198.51.100.7' }
    const statuses: number[] = []
    for (let i = 0; i < 60; i++) {
      const res = await login(`guess-${i}`, guesser)
      statuses.push(res.status)
      await res.body?.cancel()
    }
    expect(statuses.every((s) => s === 401)).toBe(true)
    // Spent: even the right token is not tried, so further guesses learn nothing.
    const form = await login(OPERATOR_TOKEN, guesser)
    expect(form.status).toBe(429)
    expect(form.headers.get('retry-after')).toBe('60')
    expect(form.headers.get('set-cookie')).toBeNull()
    expect(await form.text()).toContain('Too many attempts from this address')
    for (const path of ['/dashboard', '/v1/devices']) {
      const bearer = await call(path, { headers: { ...operatorAuth, ...guesser } })
      expect(bearer.status).toBe(429)
      expect(ProblemDetails.parse(await bearer.json()).detail).toContain('operator token attempts')
    }
    expect((await login(OPERATOR_TOKEN, { 'cf-connecting-ip': '198.51.100.8' })).status).toBe(303)
  })

  it('counts an IPv6 client by its /64: a fresh interface address per guess buys no more guesses', async () => {
    // One subscriber's /64; the host may use any of its 2^64 addresses, one per request.
    const host = (i: number) => ({ 'cf-connecting-ip': `2001:db8:77:77::${(i + 1).toString(16)}` })
    const statuses: number[] = []
    for (let i = 0; i < 60; i++) {
      const res = await login(`guess-${i}`, host(i))
      statuses.push(res.status)
      await res.body?.cancel()
    }
    expect(statuses.every((s) => s === 401)).toBe(true)
    const spent = await login(OPERATOR_TOKEN, { 'cf-connecting-ip': '2001:db8:77:77:ffff:1:2:3' })
    expect(spent.status).toBe(429)
    await spent.body?.cancel()
    const bearer = await call('/dashboard', {
      headers: { ...operatorAuth, 'cf-connecting-ip': '2001:db8:77:77::abcd' },
    })
    expect(bearer.status).toBe(429)
    await bearer.body?.cancel()
    // The next /64 is someone else.
    expect((await login(OPERATOR_TOKEN, { 'cf-connecting-ip': '2001:db8:77:78::1' })).status).toBe(303)
  })

  it('keeps the token out of URLs: the login form posts its body', async () => {
    const response = await call('/dashboard/login')
    expect(response.status).toBe(200)
    const page = await response.text()
    expect(page).toContain('method="post"')
    expect(page).toContain('type="password"')
  })
})
