// The light / dark switch in the top bar. Its name is its visible text (the theme it switches to),
// so speech control ("click Dark theme") and screen readers agree with what is on screen.
import { useTheme } from "../../lib/theme.ts";
import { Button } from "./button.tsx";

export function ThemeToggle() {
  const [theme, toggle] = useTheme();
  const next = theme === "dark" ? "light" : "dark";
  return (
    <Button tone="ghost" onClick={toggle} data-testid="theme-toggle" title={`Switch to the ${next} theme`}>
      <span aria-hidden="true">{next === "dark" ? "☾" : "☀"}</span>
      {next === "dark" ? "Dark theme" : "Light theme"}
    </Button>
  );
}
