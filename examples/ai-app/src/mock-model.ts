import { MockLanguageModelV3 } from 'ai/test';

/**
 * The example's default model: the AI SDK's MockLanguageModelV3 (`ai/test`), so the app runs with
 * no provider key. It is deterministic: it answers with a fixed sentence about the prompt and
 * reports the usage a provider would (input and output tokens at about 4 characters a token).
 */

export const MOCK_MODEL_ID = 'tollgate-demo-mock';

/** Per-token prices of the mock model (what the provider would bill you), recorded as providerCost. */
export const MOCK_PRICES = { [MOCK_MODEL_ID]: { input: '0.0000025', output: '0.00001' } };

const tokens = (text: string) => Math.max(1, Math.ceil(text.length / 4));

/** The text parts of a call's prompt (system and user messages). */
export function promptText(prompt: ReadonlyArray<{ role: string; content: unknown }>): string {
  const out: string[] = [];
  for (const message of prompt) {
    if (typeof message.content === 'string') out.push(message.content);
    else if (Array.isArray(message.content)) {
      for (const part of message.content as Array<{ type: string; text?: string }>) if (part.type === 'text' && part.text) out.push(part.text);
    }
  }
  return out.join('\n');
}

/** What the mock answers to a prompt. */
export function mockAnswer(prompt: string): string {
  return `A mock answer to "${prompt.slice(0, 80)}": the model ran, and Tollgate charged the tokens it used.`;
}

export function createMockModel(): MockLanguageModelV3 {
  return new MockLanguageModelV3({
    provider: 'mock',
    modelId: MOCK_MODEL_ID,
    doGenerate: async ({ prompt }) => {
      const input = promptText(prompt);
      const text = mockAnswer(input);
      return {
        content: [{ type: 'text', text }],
        finishReason: { unified: 'stop', raw: 'stop' },
        usage: {
          inputTokens: { total: tokens(input), noCache: tokens(input), cacheRead: undefined, cacheWrite: undefined },
          outputTokens: { total: tokens(text), text: tokens(text), reasoning: undefined },
        },
        warnings: [],
      };
    },
  });
}
