// The light / dark switch in the top bar.
import { useTheme } from "../../lib/theme.ts";
import { Button } from "./button.tsx";

export function ThemeToggle() {
  const [theme, toggle] = useTheme();
  return (
    <Button
      tone="ghost"
      onClick={toggle}
      aria-label="Toggle theme"
      data-testid="theme-toggle"
      title={`Switch to ${theme === "dark" ? "light" : "dark"} theme`}
    >
      {theme === "dark" ? "☀ Light" : "☾ Dark"}
    </Button>
  );
}
