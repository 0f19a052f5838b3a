// The Console tab: the serial console (xterm.js) or the graphical one (noVNC), each in a chunk of its
// own fetched only when its view is shown. `?view=graphical` opens the graphical view.
import { lazy, Suspense, useState } from "react";
import { Button } from "../../../components/ui/button.tsx";
import { Spinner } from "../../../components/ui/panel.tsx";

const ConsolePanel = lazy(() => import("./console-panel.tsx"));
const GraphicalPanel = lazy(() => import("./graphical-panel.tsx"));

type View = "serial" | "graphical";

export default function ConsoleViews({ vmId, initial }: { vmId: string; initial: View }) {
  const [view, setView] = useState<View>(initial);
  const choose = (v: View) => {
    setView(v);
    const url = new URL(location.href);
    if (v === "graphical") url.searchParams.set("view", "graphical");
    else url.searchParams.delete("view");
    history.replaceState(history.state, "", url);
  };
  return (
    <div>
      <div className="mb-2 flex gap-1" role="group" aria-label="Console view">
        <Button
          tone={view === "serial" ? "primary" : "secondary"}
          aria-pressed={view === "serial"}
          onClick={() => choose("serial")}
        >
          Serial
        </Button>
        <Button
          tone={view === "graphical" ? "primary" : "secondary"}
          aria-pressed={view === "graphical"}
          onClick={() => choose("graphical")}
        >
          Graphical
        </Button>
      </div>
      <Suspense fallback={<Spinner />}>
        {view === "serial" ? <ConsolePanel vmId={vmId} /> : <GraphicalPanel vmId={vmId} />}
      </Suspense>
    </div>
  );
}
