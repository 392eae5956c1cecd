import {
  DeviceInfo,
  DeviceList,
  EnrollmentCodeCreated,
  EnrollmentCodeInfo,
  EnrollmentCodeList,
  type EnrollmentCodeRequestInput,
} from '../../schemas/devices.ts'
import type { EdgeClient } from '../edge-client.ts'
import { AgentError } from '../errors.ts'
import { errorFromResponse } from '../transfer/error-response.ts'
import { readJsonBounded } from '../transfer/read-json.ts'

/** A list of 10,000 codes is a few MB at most. */
const MAX_CODES_BYTES = 8 * 1024 * 1024

/** A page of devices is at most 1000 rows of ~250 bytes. */
const MAX_DEVICE_PAGE_BYTES = 1024 * 1024

/**
 * The operator's side of /v1/devices (workers/routes/devices.ts): enrollment codes and enrolled
 * devices, with the OPERATOR_TOKEN bearer token; every answer zod-parsed, every failure an AgentError.
 */
export async function createEnrollmentCode(
  edge: EdgeClient,
  token: string,
  request: EnrollmentCodeRequestInput,
): Promise<EnrollmentCodeCreated> {
  const response = await edge.request('/v1/devices/enrollment-codes', {
    method: 'POST',
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
    body: JSON.stringify(request),
  })
  if (!response.ok) throw await errorFromResponse(response, 'creating an enrollment code')
  return parse(response, EnrollmentCodeCreated, 'enrollment code')
}

export async function listEnrollmentCodes(edge: EdgeClient, token: string): Promise<EnrollmentCodeInfo[]> {
  const response = await edge.request('/v1/devices/enrollment-codes', {
    headers: { authorization: `Bearer ${token}` },
  })
  if (!response.ok) throw await errorFromResponse(response, 'listing enrollment codes')
  return (await parse(response, EnrollmentCodeList, 'list of enrollment codes')).codes
}

export async function revokeEnrollmentCode(
  edge: EdgeClient,
  token: string,
  id: string,
): Promise<EnrollmentCodeInfo> {
  const response = await edge.request(`/v1/devices/enrollment-codes/${encodeURIComponent(id)}/revoke`, {
    method: 'POST',
    headers: { authorization: `Bearer ${token}` },
  })
  if (!response.ok) throw await errorFromResponse(response, `revoking enrollment code ${id}`)
  return parse(response, EnrollmentCodeInfo, 'enrollment code')
}

/** One page of enrolled devices (`GET /v1/devices`), optionally of one code, after a device id. */
export async function listDevices(
  edge: EdgeClient,
  token: string,
  query: { code?: string; after?: string; limit?: number } = {},
): Promise<DeviceList> {
  const params = new URLSearchParams()
  if (query.code !== undefined) params.set('code', query.code)
  if (query.after !== undefined) params.set('after', query.after)
  if (query.limit !== undefined) params.set('limit', String(query.limit))
  const search = params.size === 0 ? '' : `?${params}`
  const response = await edge.request(`/v1/devices${search}`, {
    headers: { authorization: `Bearer ${token}` },
  })
  if (!response.ok) throw await errorFromResponse(response, 'listing devices')
  return parse(response, DeviceList, 'list of devices', MAX_DEVICE_PAGE_BYTES)
}

export async function revokeDevice(edge: EdgeClient, token: string, deviceId: string): Promise<DeviceInfo> {
  const response = await edge.request(`/v1/devices/${encodeURIComponent(deviceId)}/revoke`, {
    method: 'POST',
    headers: { authorization: `Bearer ${token}` },
  })
  if (!response.ok) throw await errorFromResponse(response, `revoking device ${deviceId}`)
  return parse(response, DeviceInfo, 'device')
}

async function parse<T>(
  response: Response,
  schema: { safeParse(v: unknown): { success: true; data: T } | { success: false } },
  what: string,
  maxBytes = MAX_CODES_BYTES,
): Promise<T> {
  const parsed = schema.safeParse(await readJsonBounded(response, maxBytes, `the ${what}`))
  if (!parsed.success) throw new AgentError('edge-rejected', `the edge sent a malformed ${what}`)
  return parsed.data
}
