import { DeviceEnrollment, type StoredDeviceCredential } from '../../schemas/devices.ts'
import { EdgeClient } from '../edge-client.ts'
import { AgentError } from '../errors.ts'
import { errorFromResponse } from '../transfer/error-response.ts'
import { readJsonBounded } from '../transfer/read-json.ts'
import { codeSha256 } from './credential-store.ts'

/** An enrollment answer is a few hundred bytes. */
const MAX_ENROLLMENT_BYTES = 16 * 1024

/**
 * `POST /v1/devices/enroll`: trades the enrollment code for a credential. With the previous credential
 * (expired, say) the edge renews the same device id without using a slot of the code. Throws AgentError:
 * `edge-rejected` with `details.status` 403/409 when the code cannot enroll this device (unknown,
 * revoked, expired, full), `network` when the edge is unreachable or, with `stallMs`, says nothing for
 * that long (its headers, or its body once it flows; 30 s by default).
 */
export async function enrollDevice(
  edgeUrl: string,
  code: string,
  options: { previous?: string; fetchImpl?: typeof fetch; stallMs?: number } = {},
): Promise<StoredDeviceCredential> {
  const stall = options.stallMs === undefined ? {} : { stallMs: options.stallMs }
  const edge = new EdgeClient(edgeUrl, options.fetchImpl, stall)
  const response = await edge.request('/v1/devices/enroll', {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({
      // No deviceName: a host name can be personal, and the edge needs nothing but the code.
      code,
      ...(options.previous === undefined ? {} : { credential: options.previous }),
    }),
  })
  if (!response.ok) throw await errorFromResponse(response, 'enrolling this device')
  const parsed = DeviceEnrollment.safeParse(
    await readJsonBounded(response, MAX_ENROLLMENT_BYTES, 'the enrollment answer', stall),
  )
  if (!parsed.success) throw new AgentError('edge-rejected', 'the edge sent a malformed enrollment answer')
  const { deviceId, codeId, credential, expiresAt } = parsed.data
  return { deviceId, codeId, credential, expiresAt, codeSha256: codeSha256(code) }
}
