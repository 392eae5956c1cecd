import { cloudflareTest } from '@cloudflare/vitest-plugin'
import { defineConfig } from 'vitest/config'

// The secret the edge tests publish with; the real one is a Worker secret (.dev.vars locally).
export const TEST_PUBLISH_TOKEN = 'test-publish-token'
// The dashboard's operator token in edge tests (OPERATOR_TOKEN; also a Worker secret).
export const TEST_OPERATOR_TOKEN = 'test-operator-token'
// The HMAC key of device credentials in edge tests (DEVICE_TOKEN_SECRET; also a Worker secret).
export const TEST_DEVICE_TOKEN_SECRET = 'test-device-token-secret'

export default defineConfig({
  test: {
    projects: [
      {
        plugins: [
          cloudflareTest({
            wrangler: { configPath: './wrangler.toml' },
            miniflare: {
              bindings: {
                PUBLISH_TOKEN: TEST_PUBLISH_TOKEN,
                OPERATOR_TOKEN: TEST_OPERATOR_TOKEN,
                DEVICE_TOKEN_SECRET: TEST_DEVICE_TOKEN_SECRET,
                // Blank: signatures unchecked at the edge (workers/test/maintainer-keys.test.ts sets keys).
                MAINTAINER_KEYS: '',
                // Blank: indexes unsigned (workers/test/index-statement.test.ts sets a key).
                INDEX_SIGNING_KEY: '',
              },
            },
          }),
        ],
        test: {
          name: 'edge',
          include: ['workers/**/*.test.ts', 'durable-objects/**/*.test.ts'],
          // The pool's first Durable Object access warms the DO runtime up (measured 6–10 s on a busy
          // 2-core machine; later calls take milliseconds), so whichever test touches a DO first needs room.
          testTimeout: 30_000,
          hookTimeout: 30_000,
          // One group at a time: the edge's files first, then the Node project's with its own workers.
          sequence: { groupOrder: 0 },
        },
      },
      {
        test: {
          name: 'node',
          environment: 'node',
          include: [
            'client-agent/**/*.test.ts',
            'delta/**/*.test.ts',
            'schemas/**/*.test.ts',
            'predict/**/*.test.ts',
            'scripts/**/*.test.ts',
          ],
          testTimeout: 60_000,
          hookTimeout: 60_000,
          // Without it the files ran one at a time (measured: never two at once in a whole CI run), though
          // most of them wait on sockets, child processes and timers rather than the CPU (two archive
          // files: 52 s one at a time, 32 s two at a time). The tests bound behaviour, not speed, and
          // pass with the machine loaded by other work.
          maxWorkers: 2,
          sequence: { groupOrder: 1 },
        },
      },
    ],
  },
})
