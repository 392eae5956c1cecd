import type { Context, MiddlewareHandler } from 'hono'
import { Hono } from 'hono'
import type { z } from 'zod'
import { deviceRegistry, type RegistryResult } from '../../durable-objects/device-registry.ts'
import {
  type DeviceEnrollment,
  DeviceInfo,
  DeviceList,
  DeviceListQuery,
  DeviceParams,
  EnrollmentCodeCreated,
  EnrollmentCodeParams,
  EnrollmentCodeRequest,
  EnrollRequest,
} from '../../schemas/devices.ts'
import type { AppEnv } from '../app-env.ts'
import { isOperatorToken } from '../dashboard/operator-auth.ts'
import { forgetCodeState } from '../devices/authenticate.ts'
import {
  credentialKeys,
  hashEnrollmentCode,
  newEnrollmentCode,
  signCredential,
  verifyCredential,
} from '../devices/credential.ts'
import { bearerToken } from '../http/auth.ts'
import { readBoundedBody } from '../http/bounded-body.ts'
import { addressLimitKey } from '../http/client-address.ts'
import { Problem, rateLimited } from '../http/problem.ts'
import { parseJsonBody, valid } from '../http/validate.ts'

/** Enrollment bodies are a few hundred bytes. */
export const MAX_DEVICES_BODY_BYTES = 4 * 1024

/**
 * Enrollment codes and enrolled devices are an operator's business (they provision device images, like
 * the edge's secrets and runtime config), so their routes take OPERATOR_TOKEN as a bearer token — never the dashboard cookie,
 * which is scoped to /dashboard anyway.
 */
const requireOperatorBearer: MiddlewareHandler<AppEnv> = async (c, next) => {
  const token = bearerToken(c.req.header('authorization'))
  if (!token || !(await isOperatorToken(c, token)))
    throw new Problem(401, 'unauthorized', 'a valid operator bearer token (OPERATOR_TOKEN) is required', {
      headers: { 'www-authenticate': 'Bearer realm="deltaport-operator"' },
    })
  await next()
}

function unwrap<T>(result: RegistryResult<T>): T {
  if (result.ok) return result.value
  const slug =
    result.status === 404
      ? 'not-found'
      : result.status === 409
        ? 'conflict'
        : result.status === 429
          ? 'too-many-requests'
          : 'enrollment-refused'
  throw new Problem(result.status, slug, result.detail, {
    ...(result.retryAfterSeconds === undefined
      ? {}
      : { headers: { 'retry-after': String(result.retryAfterSeconds) } }),
  })
}

async function jsonBody<Schema extends z.ZodType>(
  c: Context<AppEnv>,
  schema: Schema,
): Promise<z.infer<Schema>> {
  return parseJsonBody(
    await readBoundedBody(c.req.raw, MAX_DEVICES_BODY_BYTES, MAX_DEVICES_BODY_BYTES),
    schema,
  )
}

/**
 * Every enrollment, with a real code or a guessed one, is a call on the one global DeviceRegistry, and
 * the per-code limit does not bind someone who varies the code. So enrollments are also limited per
 * client address (ENROLL_RATE_LIMITER in wrangler.toml: 30 a minute per Cloudflare location), before
 * the body is read. Renewals count too: a fleet behind one NAT renews each device once per credential
 * lifetime, far below it; a batch provisioned at once retries after the Retry-After.
 */
async function limitEnrollmentsPerAddress(c: Context<AppEnv>): Promise<void> {
  // Set by Cloudflare on every request and not forgeable by the client; absent only in local tests.
  // Counted per /64 over IPv6 (addressLimitKey): a host may use any address of its /64 per request.
  const address = addressLimitKey(c.req.header('cf-connecting-ip') ?? 'unknown')
  const { success } = await c.env.ENROLL_RATE_LIMITER.limit({ key: address })
  if (!success) throw rateLimited('too many enrollments from this address; retry in a minute', 60)
}

function tokenSecret(env: Env): string {
  if (credentialKeys(env.DEVICE_TOKEN_SECRET).length === 0)
    throw new Problem(500, 'internal', 'DEVICE_TOKEN_SECRET is not configured on this edge')
  return env.DEVICE_TOKEN_SECRET
}

/**
 * /v1/devices — device enrollment (durable-objects/device-registry.ts, ADR 0026). Operators create,
 * list and revoke enrollment codes, and list and revoke enrolled devices; devices trade a code for a
 * credential (public, bounded per code).
 */
export const devicesRouter = new Hono<AppEnv>()
  .get('/', requireOperatorBearer, valid('query', DeviceListQuery), async (c) => {
    const page = await deviceRegistry(c.env).listDevices(c.req.valid('query'))
    c.header('cache-control', 'no-store')
    return c.json(DeviceList.parse(page))
  })
  .post('/:deviceId/revoke', requireOperatorBearer, valid('param', DeviceParams), async (c) => {
    const { deviceId } = c.req.valid('param')
    const info = DeviceInfo.parse(unwrap(await deviceRegistry(c.env).revokeDevice(deviceId)))
    // The revoked ids travel with their code's cached state: this isolate refuses the device at once.
    forgetCodeState(info.codeId)
    c.header('cache-control', 'no-store')
    return c.json(info)
  })
  .post('/enrollment-codes', requireOperatorBearer, async (c) => {
    const request = await jsonBody(c, EnrollmentCodeRequest)
    tokenSecret(c.env)
    const code = newEnrollmentCode()
    const info = unwrap(
      await deviceRegistry(c.env).createCode({ ...request, codeHash: await hashEnrollmentCode(code) }),
    )
    c.header('cache-control', 'no-store')
    return c.json(EnrollmentCodeCreated.parse({ code, info }), 201)
  })
  .get('/enrollment-codes', requireOperatorBearer, async (c) => {
    c.header('cache-control', 'no-store')
    return c.json({ codes: await deviceRegistry(c.env).listCodes() })
  })
  .post(
    '/enrollment-codes/:id/revoke',
    requireOperatorBearer,
    valid('param', EnrollmentCodeParams),
    async (c) => {
      const { id } = c.req.valid('param')
      const info = unwrap(await deviceRegistry(c.env).revokeCode(id))
      forgetCodeState(id)
      return c.json(info)
    },
  )
  .post('/enroll', async (c) => {
    await limitEnrollmentsPerAddress(c)
    const request = await jsonBody(c, EnrollRequest)
    const secret = tokenSecret(c.env)
    // Renewal needs proof the device was enrolled: a credential this edge signed (expired is fine).
    let renew: { deviceId: string; codeId: string } | undefined
    if (request.credential !== undefined) {
      const check = await verifyCredential(secret, request.credential)
      const claims = check.ok ? check.claims : check.reason === 'expired' ? check.claims : undefined
      if (claims !== undefined) renew = { deviceId: claims.deviceId, codeId: claims.codeId }
    }
    const enrolled = unwrap(
      await deviceRegistry(c.env).enroll({
        codeHash: await hashEnrollmentCode(request.code),
        ...(renew === undefined ? {} : { renew }),
      }),
    )
    // The registry chose the times, so its record of the newest credential's expiry is this one's.
    const { issuedAt, expiresAt } = enrolled
    const credential = await signCredential(secret, {
      deviceId: enrolled.deviceId,
      codeId: enrolled.codeId,
      issuedAt,
      expiresAt,
    })
    console.log(
      JSON.stringify({
        level: 'info',
        msg: 'device enrolled',
        deviceId: enrolled.deviceId,
        codeId: enrolled.codeId,
        renewed: enrolled.renewed,
        ...(request.deviceName === undefined ? {} : { deviceName: request.deviceName }),
      }),
    )
    const body: DeviceEnrollment = {
      deviceId: enrolled.deviceId,
      codeId: enrolled.codeId,
      credential,
      expiresAt: new Date(expiresAt * 1000).toISOString(),
      renewed: enrolled.renewed,
    }
    c.header('cache-control', 'no-store')
    return c.json(body, enrolled.renewed ? 200 : 201)
  })
