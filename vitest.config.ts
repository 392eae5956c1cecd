import { cloudflareTest } from '@cloudflare/vitest-plugin'
import { defineConfig } from 'vitest/config'

// The secret the edge tests publish with; the real one is a Worker secret (.dev.vars locally).
export const TEST_PUBLISH_TOKEN = 'test-publish-token'

export default defineConfig({
  test: {
    projects: [
      {
        plugins: [
          cloudflareTest({
            wrangler: { configPath: './wrangler.toml' },
            miniflare: { bindings: { PUBLISH_TOKEN: TEST_PUBLISH_TOKEN } },
          }),
        ],
        test: {
          name: 'edge',
          include: ['workers/**/*.test.ts', 'durable-objects/**/*.test.ts'],
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
          ],
          testTimeout: 60_000,
          hookTimeout: 60_000,
        },
      },
    ],
  },
})
