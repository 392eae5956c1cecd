import { z } from 'zod'
import { decimalParam, IsoDateTime } from './common.ts'

/**
 * Device enrollment (docs/decisions/0026-device-enrollment.md): operators create enrollment codes, devices
 * trade one for a credential, and telemetry, rollout outcomes and prefetch queries carry it as
 * `Authorization: Device <credential>`.
 */

export const MAX_DEVICES_PER_CODE = 1_000_000
export const MAX_ENROLLMENT_DAYS = 3650

/** Public id of an enrollment code (listed, revoked by, and carried in every credential it issued). */
export const EnrollmentCodeId = z.string().regex(/^c[A-Za-z0-9_-]{12}$/, 'an enrollment code id (c + 12)')
export type EnrollmentCodeId = z.infer<typeof EnrollmentCodeId>

/** The secret code baked into device images; the edge keeps only its SHA-256. */
export const EnrollmentCode = z.string().regex(/^dpe1_[A-Za-z0-9_-]{32}$/, 'an enrollment code (dpe1_…)')
export type EnrollmentCode = z.infer<typeof EnrollmentCode>

/** A device id: also the client id the edge counts the device under (a valid ClientId). */
export const DeviceId = z.string().regex(/^d[A-Za-z0-9_-]{20}$/, 'a device id (d + 20)')
export type DeviceId = z.infer<typeof DeviceId>

/**
 * `dp1.<deviceId>.<codeId>.<issuedAt>.<expiresAt>.<mac>`: epoch seconds, and the base64url
 * HMAC-SHA256 (DEVICE_TOKEN_SECRET) of everything before it. Verified without any storage read.
 */
export const DEVICE_CREDENTIAL_PATTERN =
  /^dp1\.(d[A-Za-z0-9_-]{20})\.(c[A-Za-z0-9_-]{12})\.(\d{1,12})\.(\d{1,12})\.([A-Za-z0-9_-]{43})$/
export const DeviceCredential = z.string().max(160).regex(DEVICE_CREDENTIAL_PATTERN, 'a device credential')
export type DeviceCredential = z.infer<typeof DeviceCredential>

/**
 * Response header by which the edge asks a device to renew its credential now (value `renew`): it was
 * signed with a key being rotated out of DEVICE_TOKEN_SECRET (workers/devices/credential.ts).
 */
export const CREDENTIAL_RENEW_HEADER = 'x-deltaport-credential'

const Label = z
  .string()
  .min(1)
  .max(64)
  .regex(/^[A-Za-z0-9][A-Za-z0-9 ._:-]*$/, 'letters, digits, space . _ : -')

/** Body of `POST /v1/devices/enrollment-codes` (operator). */
export const EnrollmentCodeRequest = z.object({
  label: Label,
  /** Devices the code may enroll; renewals of an enrolled device do not count. */
  maxDevices: z.number().int().min(1).max(MAX_DEVICES_PER_CODE),
  /** Days during which new devices may enroll with it (its devices keep working afterwards). */
  expiresDays: z.number().int().min(1).max(MAX_ENROLLMENT_DAYS).default(30),
  /** Lifetime of each credential it issues; the agent renews it with the code (same device id). */
  credentialDays: z.number().int().min(1).max(MAX_ENROLLMENT_DAYS).default(365),
})
export type EnrollmentCodeRequest = z.infer<typeof EnrollmentCodeRequest>
export type EnrollmentCodeRequestInput = z.input<typeof EnrollmentCodeRequest>

/** What the edge lists about a code (never the code itself). */
export const EnrollmentCodeInfo = z.object({
  id: EnrollmentCodeId,
  label: Label,
  maxDevices: z.number().int().min(1),
  enrolled: z.number().int().nonnegative(),
  credentialDays: z.number().int().min(1),
  createdAt: IsoDateTime,
  expiresAt: IsoDateTime,
  revokedAt: IsoDateTime.nullable(),
})
export type EnrollmentCodeInfo = z.infer<typeof EnrollmentCodeInfo>

/** Answer of `POST /v1/devices/enrollment-codes`: the only time the code is shown. */
export const EnrollmentCodeCreated = z.object({ code: EnrollmentCode, info: EnrollmentCodeInfo })
export type EnrollmentCodeCreated = z.infer<typeof EnrollmentCodeCreated>

export const EnrollmentCodeList = z.object({ codes: z.array(EnrollmentCodeInfo) })
export type EnrollmentCodeList = z.infer<typeof EnrollmentCodeList>

export const EnrollmentCodeParams = z.object({ id: EnrollmentCodeId })

/** Body of `POST /v1/devices/enroll` (public, rate-limited per code). */
export const EnrollRequest = z.object({
  code: EnrollmentCode,
  /** A free-form name for logs (hostname, serial); not stored. */
  deviceName: z.string().min(1).max(64).optional(),
  /** The device's previous credential (even expired): renewed under the same device id, no new slot. */
  credential: DeviceCredential.optional(),
})
export type EnrollRequest = z.infer<typeof EnrollRequest>

/** Answer of `POST /v1/devices/enroll`. */
export const DeviceEnrollment = z.object({
  deviceId: DeviceId,
  codeId: EnrollmentCodeId,
  credential: DeviceCredential,
  expiresAt: IsoDateTime,
  /** True when an existing device id was renewed (no new slot was used). */
  renewed: z.boolean(),
})
export type DeviceEnrollment = z.infer<typeof DeviceEnrollment>

/**
 * An enrolled device as the registry records it (operator view; ADR 0026, "Later changes"). Devices
 * enrolled before the registry recorded devices appear at their first renewal, with `enrolledAt` null.
 */
export const DeviceInfo = z.object({
  deviceId: DeviceId,
  codeId: EnrollmentCodeId,
  /** When the device took its slot; null when it enrolled before devices were recorded. */
  enrolledAt: IsoDateTime.nullable(),
  /** Its last renewal (same device id, new credential), or null. */
  renewedAt: IsoDateTime.nullable(),
  /** Expiry of the newest credential the edge issued to it: every older one expires no later. */
  credentialExpiresAt: IsoDateTime,
  revokedAt: IsoDateTime.nullable(),
})
export type DeviceInfo = z.infer<typeof DeviceInfo>

/** Devices per page of `GET /v1/devices` at most (and by default). */
export const MAX_DEVICES_PAGE = 1000

/** One page of devices in device id order, optionally of one code (the registry's listDevices). */
export const DevicePage = z.object({
  code: EnrollmentCodeId.optional(),
  limit: z.number().int().min(1).max(MAX_DEVICES_PAGE),
  /** The `next` of the previous page: devices after this id. */
  after: DeviceId.optional(),
})
export type DevicePage = z.infer<typeof DevicePage>

/** Query of `GET /v1/devices` (operator): a DevicePage spelled as query parameters. */
export const DeviceListQuery = DevicePage.extend({
  limit: decimalParam(1, MAX_DEVICES_PAGE).default(MAX_DEVICES_PAGE),
})

/** Answer of `GET /v1/devices`: `next` is the cursor of the following page, null on the last one. */
export const DeviceList = z.object({ devices: z.array(DeviceInfo), next: DeviceId.nullable() })
export type DeviceList = z.infer<typeof DeviceList>

export const DeviceParams = z.object({ deviceId: DeviceId })

/** What the DeviceRegistry stores per code (one JSON row; the code's SHA-256 is the row's key). */
export const EnrollmentCodeRecord = z.object({
  id: EnrollmentCodeId,
  label: Label,
  maxDevices: z.number().int().min(1),
  enrolled: z.number().int().nonnegative(),
  credentialDays: z.number().int().min(1),
  createdAt: z.number().int().nonnegative(),
  expiresAt: z.number().int().nonnegative(),
  revokedAt: z.number().int().nonnegative().nullable(),
  /** Enrollment token bucket of the code (durable-objects/rate-limit.ts). */
  bucket: z.object({ tokens: z.number(), refilledAt: z.number() }).optional(),
})
export type EnrollmentCodeRecord = z.infer<typeof EnrollmentCodeRecord>

/** `devices.requireCredential` of the runtime config: which requests must carry a device credential. */
export const DeviceCredentialRequirement = z.enum(['off', 'reports', 'all'])
export type DeviceCredentialRequirement = z.infer<typeof DeviceCredentialRequirement>

/** What the agent keeps under `<installRoot>/.device/credential.json` (mode 0600). */
export const StoredDeviceCredential = z.object({
  deviceId: DeviceId,
  codeId: EnrollmentCodeId,
  credential: DeviceCredential,
  expiresAt: IsoDateTime,
  /** SHA-256 of the enrollment code it came from: a new code in the config means enrolling again. */
  codeSha256: z.string().regex(/^[0-9a-f]{64}$/),
})
export type StoredDeviceCredential = z.infer<typeof StoredDeviceCredential>
