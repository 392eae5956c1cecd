import { DashboardLoginForm } from '../../schemas/dashboard.ts'
import { readBoundedBody } from '../http/bounded-body.ts'

/** A login form is one short field; anything bigger is not a login. */
export const MAX_LOGIN_BODY_BYTES = 4096

/**
 * The token from the login form (application/x-www-form-urlencoded, bounded), or null when the body is
 * not a well-formed form with a token field.
 */
export async function readLoginToken(request: Request): Promise<string | null> {
  const type = (request.headers.get('content-type') ?? '').split(';')[0]?.trim().toLowerCase()
  if (type !== 'application/x-www-form-urlencoded') return null
  const bytes = await readBoundedBody(request, MAX_LOGIN_BODY_BYTES, MAX_LOGIN_BODY_BYTES)
  const fields = new URLSearchParams(new TextDecoder().decode(bytes))
  const parsed = DashboardLoginForm.safeParse({ token: fields.get('token') ?? undefined })
  return parsed.success ? parsed.data.token : null
}
