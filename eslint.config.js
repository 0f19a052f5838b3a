// Type-aware lint for the whole tree (`npm run lint`): the rules that catch what tests do not, such as
// a promise nobody awaits (an unhandled rejection crashes the agent or resets a Durable Object), a
// switch over a protocol union that misses a case, unused code, and `any` leaking past a boundary.
// Formatting is Biome's job (`npm run format`), so no stylistic rule is on here.
import tseslint from "typescript-eslint";

export default tseslint.config(
  { ignores: ["node_modules/", "web/dist/", "dist/", ".wrangler/", "worker-configuration.d.ts", "**/*.d.ts"] },
  {
    files: ["**/*.{js,mjs}"],
    rules: {
      "no-unused-vars": ["error", { caughtErrors: "none" }],
      "no-unreachable": "error",
      "no-dupe-keys": "error",
    },
  },
  {
    files: ["**/*.{ts,tsx,mts}"],
    extends: [tseslint.configs.base],
    languageOptions: { parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname } },
    linterOptions: { reportUnusedDisableDirectives: "error" },
    rules: {
      "@typescript-eslint/no-floating-promises": "error",
      "@typescript-eslint/no-misused-promises": "error",
      "@typescript-eslint/await-thenable": "error",
      "@typescript-eslint/switch-exhaustiveness-check": ["error", { considerDefaultExhaustiveForUnions: true }],
      "@typescript-eslint/no-unused-vars": [
        "error",
        { argsIgnorePattern: "^_", varsIgnorePattern: "^_", caughtErrors: "none" },
      ],
      "@typescript-eslint/no-explicit-any": "error",
      "@typescript-eslint/no-unsafe-argument": "error",
      "@typescript-eslint/no-unsafe-assignment": "error",
      "@typescript-eslint/no-unsafe-call": "error",
      "@typescript-eslint/no-unsafe-member-access": "error",
      "@typescript-eslint/no-unsafe-return": "error",
      "@typescript-eslint/no-unnecessary-type-assertion": "error",
      "@typescript-eslint/only-throw-error": "error",
      "@typescript-eslint/no-unused-expressions": "error",
    },
  },
  {
    // Tests read the API's JSON answers loosely (`json<any>`) and assert on them: `any` there is the
    // point of a test, not a leak past a boundary. Every other rule holds in tests too.
    files: ["test/**/*.{ts,tsx}"],
    rules: {
      "@typescript-eslint/no-explicit-any": "off",
      "@typescript-eslint/no-unsafe-argument": "off",
      "@typescript-eslint/no-unsafe-assignment": "off",
      "@typescript-eslint/no-unsafe-call": "off",
      "@typescript-eslint/no-unsafe-member-access": "off",
      "@typescript-eslint/no-unsafe-return": "off",
    },
  },
);
