/**
 * nothing-lab: the NothingAI sidebar for JupyterLab.
 *
 * Adds a left-sidebar panel listing the user's training runs (or everyone's queue)
 * and commands to open a run's live log in the main area or its TensorBoard.
 */
import { ILayoutRestorer, JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import { WidgetTracker, MainAreaWidget } from '@jupyterlab/apputils';
import { LabIcon } from '@jupyterlab/ui-components';

import { tensorboardUrl } from './api';
import { createLogWidget, LogView } from './logs';
import { RunsModel } from './model';
import { RunsPanel } from './panel';

namespace CommandIDs {
  export const openLogs = 'nothing:open-logs';
  export const openTensorBoard = 'nothing:open-tensorboard';
  export const showRuns = 'nothing:show-runs';
}

const gpuIcon = new LabIcon({
  name: 'nothing-lab:gpu',
  svgstr:
    '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 24 24" width="16"><g class="jp-icon3" fill="#616161">' +
    '<path d="M2 7h17v10H2zM4 9v6h13V9zm15 1h3v1h-3zm0 3h3v1h-3zM5 18h2v2H5zm4 0h2v2H9zm4 0h2v2h-2z"/>' +
    '<circle cx="10.5" cy="12" r="2"/></g></svg>'
});

const plugin: JupyterFrontEndPlugin<void> = {
  id: 'nothing-lab:sidebar',
  description: 'NothingAI runs, queue, logs and TensorBoard in the sidebar.',
  autoStart: true,
  optional: [ILayoutRestorer],
  activate: (app: JupyterFrontEnd, restorer: ILayoutRestorer | null) => {
    const tracker = new WidgetTracker<MainAreaWidget<LogView>>({ namespace: 'nothing-logs' });
    const model = new RunsModel();

    app.commands.addCommand(CommandIDs.openLogs, {
      label: args => `Open log of run ${args.runId}`,
      execute: args => {
        const runId = Number(args.runId);
        const existing = tracker.find(w => w.content.runId === runId);
        if (existing) {
          app.shell.activateById(existing.id);
          return existing;
        }
        const widget = createLogWidget(runId, String(args.title ?? ''));
        void tracker.add(widget);
        app.shell.add(widget, 'main');
        return widget;
      }
    });
    app.commands.addCommand(CommandIDs.openTensorBoard, {
      label: args => `Open TensorBoard of run ${args.runId}`,
      execute: async args => {
        window.open(await tensorboardUrl(Number(args.runId)), '_blank', 'noopener');
      }
    });

    const panel = new RunsPanel(model, {
      openLogs: row => void app.commands.execute(CommandIDs.openLogs, { runId: row.id, title: row.name ?? '' })
    });
    panel.title.icon = gpuIcon;
    app.shell.add(panel, 'left', { rank: 650 });
    app.commands.addCommand(CommandIDs.showRuns, {
      label: 'Show GPU runs',
      execute: () => app.shell.activateById(panel.id)
    });
    if (restorer) {
      restorer.add(panel, 'nothing-runs');
      void restorer.restore(tracker, {
        command: CommandIDs.openLogs,
        args: w => ({ runId: w.content.runId }),
        name: w => String(w.content.runId)
      });
    }
  }
};

export default plugin;
