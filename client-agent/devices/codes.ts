import {
  EnrollmentCodeCreated,
  EnrollmentCodeInfo,
  EnrollmentCodeList,
  type EnrollmentCodeRequestInput,
} from '../../schemas/devices.ts'
import type { EdgeClient } from '../edge-client.ts'
import { AgentError, errorFromResponse } from '../errors.ts'
import { readJsonBounded } from '../transfer/read-json.ts'

/** A list of 10,000 codes is a few MB at most. */
const MAX_CODES_BYTES = 8 * 1024 * 1024

/**
 * The operator's side of /v1/devices/enrollment-codes (workers/routes/devices.ts) with the
 * OPERATOR_TOKEN bearer token: every answer zod-parsed, every failure an AgentError.
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

async function parse<T>(
  response: Response,
  schema: { safeParse(v: unknown): { success: true; data: T } | { success: false } },
  what: string,
): Promise<T> {
  const parsed = schema.safeParse(await readJsonBounded(response, MAX_CODES_BYTES, `the ${what}`))
  if (!parsed.success) throw new AgentError('edge-rejected', `the edge sent a malformed ${what}`)
  return parsed.data
}
