"use strict";(self.rspackChunknothing_lab=self.rspackChunknothing_lab||[]).push([[232],{475(a,n,t){var r=t(601),o=t.n(r),i=t(314),e=(t.n(i))()(o());e.push([a.id,`.nai-RunsPanel {
  background: var(--jp-layout-color1);
  color: var(--jp-ui-font-color1);
  font-size: var(--jp-ui-font-size1);
  overflow-y: auto;
  padding: 8px;
}
.nai-title { font-size: var(--jp-ui-font-size2); margin: 0 0 8px; }
.nai-facts { display: grid; grid-template-columns: 1fr auto; gap: 2px 8px; margin: 0 0 8px; }
.nai-facts dt { color: var(--jp-ui-font-color2); }
.nai-facts dd { margin: 0; font-weight: 600; text-align: right; }
.nai-cluster { margin-bottom: 8px; }
.nai-gpubar { display: flex; flex-wrap: wrap; gap: 3px; margin-top: 4px; }
.nai-gpu { width: 14px; height: 14px; border-radius: 2px; display: inline-block; }
.nai-gpu-busy { background: var(--jp-brand-color1); }
.nai-gpu-free { background: var(--jp-success-color2, #7cb342); }
.nai-toggle { display: flex; gap: 4px; margin: 8px 0; }
.nai-toggle button {
  flex: 1; border: 1px solid var(--jp-border-color1); background: var(--jp-layout-color2);
  color: var(--jp-ui-font-color1); padding: 4px; cursor: pointer;
}
.nai-toggle button[aria-pressed='true'] { background: var(--jp-brand-color1); color: white; }
.nai-error { color: var(--jp-error-color1); }
.nai-runs { list-style: none; margin: 0; padding: 0; }
.nai-run { border: 1px solid var(--jp-border-color2); border-radius: 4px; padding: 6px; margin-bottom: 6px; }
.nai-run-head { display: flex; justify-content: space-between; gap: 6px; font-weight: 600; }
.nai-run-name { overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
.nai-run-meta, .nai-run-wait, .nai-run-reason { color: var(--jp-ui-font-color2); margin-top: 2px; }
.nai-run-actions { display: flex; flex-wrap: wrap; gap: 4px; margin-top: 4px; }
.nai-run-actions button { font-size: var(--jp-ui-font-size0); padding: 0 6px; height: 22px; }
.nai-state { font-size: var(--jp-ui-font-size0); white-space: nowrap; }
.nai-state-QUEUED { color: #8a6d00; }
.nai-state-RUNNING { color: #1565c0; }
.nai-state-COMPLETE { color: #2e7d32; }
.nai-state-FAIL-TRAIN, .nai-state-CREATE-FAILED { color: #c62828; }
.nai-state-STOPPED { color: #616161; }
.nai-empty { color: var(--jp-ui-font-color2); }
.nai-LogView { overflow: auto; background: var(--jp-layout-color0); }
.nai-LogView-status { padding: 4px 8px; color: var(--jp-ui-font-color2); border-bottom: 1px solid var(--jp-border-color2); }
.nai-LogView-text { margin: 0; padding: 8px; font-family: var(--jp-code-font-family); font-size: var(--jp-code-font-size); white-space: pre-wrap; }
.nai-storage { font-weight: 600; margin: 0 0 8px; }
.nai-tracking { margin-top: 12px; border-top: 1px solid var(--jp-border-color2); padding-top: 8px; }
.nai-subtitle { font-size: var(--jp-ui-font-size1); margin: 8px 0 4px; }
.nai-tracking-controls { display: grid; grid-template-columns: auto 1fr; gap: 4px 8px; align-items: center; }
.nai-smoothing { display: flex; gap: 4px; align-items: center; }
.nai-smoothing input { flex: 1; min-width: 0; }
.nai-chart { margin-top: 6px; }
.nai-chart-svg { width: 100%; height: auto; background: var(--jp-layout-color0); }
.nai-axis { stroke: var(--jp-border-color1); stroke-width: 1; }
.nai-tick { font-size: 9px; fill: var(--jp-ui-font-color2); }
.nai-curve { fill: none; stroke-width: 1.5; }
.nai-curve-raw { fill: none; stroke-width: 1; opacity: 0.25; }
.nai-legend { list-style: none; margin: 4px 0; padding: 0; }
.nai-legend li { display: flex; align-items: center; gap: 4px; }
.nai-swatch { width: 10px; height: 10px; border-radius: 2px; display: inline-block; flex: none; }
.nai-runs-table-wrap { overflow-x: auto; }
.nai-runs-table { border-collapse: collapse; font-size: var(--jp-ui-font-size0); }
.nai-runs-table th, .nai-runs-table td { border-bottom: 1px solid var(--jp-border-color2); padding: 2px 4px; text-align: left; white-space: nowrap; }
.nai-sort { background: none; border: none; padding: 0; font: inherit; font-weight: 600; color: inherit; cursor: pointer; }
.nai-runs-table th[aria-sort='ascending'] .nai-sort::after { content: ' ▲'; }
.nai-runs-table th[aria-sort='descending'] .nai-sort::after { content: ' ▼'; }
.nai-runs-table td button { font-size: var(--jp-ui-font-size0); padding: 0 6px; height: 20px; }
.nai-checkpoint-list { list-style: none; margin: 0; padding: 0; }
.nai-checkpoint-list li { display: flex; gap: 6px; align-items: center; }
.nai-checkpoint-name { flex: 1; overflow: hidden; text-overflow: ellipsis; }
.nai-checkpoint-size, .nai-checkpoint-total { color: var(--jp-ui-font-color2); }
.nai-tracking-controls select { width: 100%; min-width: 0; }
.nai-tracking-controls output { font-size: var(--jp-ui-font-size0); }
.nai-datasets-section { margin-top: 12px; }
.nai-datasets { list-style: none; margin: 0; padding: 0; }
.nai-dataset { border-bottom: 1px solid var(--jp-border-color2); padding: 4px 0; }
.nai-dataset-size { color: var(--jp-ui-font-color2); }
.nai-dataset-copied code { user-select: all; background: var(--jp-layout-color2); padding: 0 2px; }
.nai-serving-section { margin-top: 12px; border-top: 1px solid var(--jp-border-color2); padding-top: 4px; }
.nai-models, .nai-endpoints, .nai-batches, .nai-stages, .nai-resources { list-style: none; margin: 0; padding: 0; }
.nai-model, .nai-batch { border-bottom: 1px solid var(--jp-border-color2); padding: 4px 0; }
.nai-endpoint { border: 1px solid var(--jp-border-color2); border-radius: 4px; padding: 6px; margin-bottom: 6px; }
.nai-endpoint-url { display: flex; gap: 4px; align-items: center; margin-top: 2px; }
.nai-endpoint-url code { flex: 1; min-width: 0; overflow-wrap: anywhere; user-select: all; }
.nai-endpoint-url button { font-size: var(--jp-ui-font-size0); padding: 0 6px; height: 20px; }
.nai-stage { border-left: 2px solid var(--jp-border-color1); padding: 2px 0 2px 6px; margin-top: 6px; }
.nai-resource { margin-top: 2px; font-size: var(--jp-ui-font-size0); }
.nai-default { background: var(--jp-brand-color1); color: white; border-radius: 2px; padding: 0 3px; font-size: 9px; }
.nai-tags { display: flex; flex-wrap: wrap; gap: 3px; margin-top: 2px; }
.nai-tag { background: var(--jp-layout-color2); border-radius: 2px; padding: 0 3px; font-size: var(--jp-ui-font-size0); }
.nai-failure-log pre { max-height: 160px; overflow: auto; margin: 2px 0; padding: 4px; background: var(--jp-layout-color2);
  font-family: var(--jp-code-font-family); font-size: var(--jp-ui-font-size0); white-space: pre-wrap; }
.nai-stats { margin-top: 4px; }
.nai-stats-totals { color: var(--jp-ui-font-color2); font-size: var(--jp-ui-font-size0); }
.nai-bar { fill: var(--jp-brand-color2, #64b5f6); }
.nai-bar-error { fill: #c62828; }
.nai-latency { fill: none; stroke-width: 1.2; }
circle.nai-latency { stroke: none; }
.nai-latency-p50 { stroke: #2e7d32; }
.nai-latency-p99 { stroke: #ef6c00; }
circle.nai-latency-p50 { fill: #2e7d32; }
circle.nai-latency-p99 { fill: #ef6c00; }
.nai-state-ACTIVE { color: #2e7d32; }
.nai-state-CREATE-REQUESTED, .nai-state-CREATE-IN-PROGRESS, .nai-state-UPDATE-IN-PROGRESS,
.nai-state-DEPLOY-IN-PROGRESS, .nai-state-DELETE-IN-PROGRESS { color: #8a6d00; }
.nai-state-UPDATE-FAILED, .nai-state-DEPLOY-FAILED, .nai-state-FAIL-BATCH-INFERENCE { color: #c62828; }
.nai-stats-legend { display: flex; align-items: center; gap: 3px; font-size: 9px; color: var(--jp-ui-font-color2); }
.nai-bar-swatch { background: var(--jp-brand-color2, #64b5f6); }
.nai-p50-swatch { background: #2e7d32; height: 2px; }
.nai-p99-swatch { background: #ef6c00; height: 2px; }
.nai-usage { margin: 0 0 8px; }
.nai-usage-bar { fill: var(--jp-brand-color1); }
.nai-usage-total { color: var(--jp-ui-font-color2); font-size: var(--jp-ui-font-size0); }
.nai-tunings-section { margin-top: 12px; border-top: 1px solid var(--jp-border-color2); padding-top: 4px; }
.nai-tunings { list-style: none; margin: 0; padding: 0; }
.nai-tuning .nai-run-head { flex-wrap: wrap; }
.nai-tuning { border: 1px solid var(--jp-border-color2); border-radius: 4px; padding: 6px; margin-bottom: 6px; }
.nai-tuning-trials { margin-top: 6px; }
.nai-trial-point { fill: var(--jp-brand-color1); }
.nai-trial-EARLY_STOPPED { fill: #8a6d00; }
.nai-best { fill: none; stroke: #2e7d32; stroke-width: 1.5; }
.nai-target { stroke: #c62828; stroke-width: 1; stroke-dasharray: 3 2; }
.nai-point-swatch { background: var(--jp-brand-color1); border-radius: 5px; }
.nai-best-swatch { background: #2e7d32; height: 2px; }
.nai-scatters { display: grid; grid-template-columns: repeat(auto-fill, minmax(84px, 1fr)); gap: 4px; margin-top: 4px; }
.nai-scatter-figure { margin: 0; min-width: 0; }
.nai-scatter-figure figcaption { font-size: var(--jp-ui-font-size0); font-weight: 600; text-align: center; }
.nai-band-0 { fill: var(--jp-layout-color2); }
.nai-band-1 { fill: var(--jp-layout-color3); opacity: 0.5; }
.nai-state-SUCCEEDED { color: #2e7d32; }
.nai-state-STOP-IN-PROGRESS, .nai-state-COMPLETE-IN-PROGRESS { color: #8a6d00; }
.nai-state-FAIL-HYPERPARAMETER-TUNING, .nai-state-FAIL-HYPERPARAMETER-TUNING-IN-PROGRESS { color: #c62828; }
.nai-model-form { display: grid; grid-template-columns: auto 1fr; gap: 4px 8px; align-items: center; }
`,""]),t.d(n,{},{A:e})},314(a){a.exports=function(a){var n=[];return n.toString=function(){return this.map(function(n){var t="",r=void 0!==n[5];return n[4]&&(t+="@supports (".concat(n[4],") {")),n[2]&&(t+="@media ".concat(n[2]," {")),r&&(t+="@layer".concat(n[5].length>0?" ".concat(n[5]):""," {")),t+=a(n),r&&(t+="}"),n[2]&&(t+="}"),n[4]&&(t+="}"),t}).join("")},n.i=function(a,t,r,o,i){"string"==typeof a&&(a=[[null,a,void 0]]);var e={};if(r)for(var p=0;p<this.length;p++){var s=this[p][0];null!=s&&(e[s]=!0)}for(var l=0;l<a.length;l++){var c=[].concat(a[l]);r&&e[c[0]]||(void 0!==i&&(void 0===c[5]||(c[1]="@layer".concat(c[5].length>0?" ".concat(c[5]):""," {").concat(c[1],"}")),c[5]=i),t&&(c[2]&&(c[1]="@media ".concat(c[2]," {").concat(c[1],"}")),c[2]=t),o&&(c[4]?(c[1]="@supports (".concat(c[4],") {").concat(c[1],"}"),c[4]=o):c[4]="".concat(o)),n.push(c))}},n}},601(a){a.exports=function(a){return a[1]}},72(a){var n=[];function t(a){for(var t=-1,r=0;r<n.length;r++)if(n[r].identifier===a){t=r;break}return t}function r(a,r){for(var o={},i=[],e=0;e<a.length;e++){var p=a[e],s=r.base?p[0]+r.base:p[0],l=o[s]||0,c="".concat(s," ").concat(l);o[s]=l+1;var d=t(c),u={css:p[1],media:p[2],sourceMap:p[3],supports:p[4],layer:p[5]};if(-1!==d)n[d].references++,n[d].updater(u);else{var g=function(a,n){var t=n.domAPI(n);return t.update(a),function(n){n?(n.css!==a.css||n.media!==a.media||n.sourceMap!==a.sourceMap||n.supports!==a.supports||n.layer!==a.layer)&&t.update(a=n):t.remove()}}(u,r);r.byIndex=e,n.splice(e,0,{identifier:c,updater:g,references:1})}i.push(c)}return i}a.exports=function(a,o){var i=r(a=a||[],o=o||{});return function(a){a=a||[];for(var e=0;e<i.length;e++){var p=t(i[e]);n[p].references--}for(var s=r(a,o),l=0;l<i.length;l++){var c=t(i[l]);0===n[c].references&&(n[c].updater(),n.splice(c,1))}i=s}}},659(a){var n={};a.exports=function(a,t){var r=function(a){if(void 0===n[a]){var t=document.querySelector(a);if(window.HTMLIFrameElement&&t instanceof window.HTMLIFrameElement)try{t=t.contentDocument.head}catch(a){t=null}n[a]=t}return n[a]}(a);if(!r)throw Error("Couldn't find a style target. This probably means that the value for the 'insert' parameter is invalid.");r.appendChild(t)}},540(a){a.exports=function(a){var n=document.createElement("style");return a.setAttributes(n,a.attributes),a.insert(n,a.options),n}},56(a,n,t){a.exports=function(a){var n=t.nc;n&&a.setAttribute("nonce",n)}},206(a){a.exports=function(a){if("u"<typeof document)return{update:function(){},remove:function(){}};var n=a.insertStyleElement(a);return{update:function(t){var r,o,i;r="",t.supports&&(r+="@supports (".concat(t.supports,") {")),t.media&&(r+="@media ".concat(t.media," {")),(o=void 0!==t.layer)&&(r+="@layer".concat(t.layer.length>0?" ".concat(t.layer):""," {")),r+=t.css,o&&(r+="}"),t.media&&(r+="}"),t.supports&&(r+="}"),(i=t.sourceMap)&&"u">typeof btoa&&(r+="\n/*# sourceMappingURL=data:application/json;base64,".concat(btoa(unescape(encodeURIComponent(JSON.stringify(i))))," */")),a.styleTagTransform(r,n,a.options)},remove:function(){var a;null===(a=n).parentNode||a.parentNode.removeChild(a)}}}},113(a){a.exports=function(a,n){if(n.styleSheet)n.styleSheet.cssText=a;else{for(;n.firstChild;)n.removeChild(n.firstChild);n.appendChild(document.createTextNode(a))}}},579(a,n,t){var r=t(72),o=t.n(r),i=t(206),e=t.n(i),p=t(659),s=t.n(p),l=t(56),c=t.n(l),d=t(540),u=t.n(d),g=t(113),f=t.n(g),x=t(475),v={};v.styleTagTransform=f(),v.setAttributes=c(),v.insert=s().bind(null,"head"),v.domAPI=e(),v.insertStyleElement=u(),o()(x.A,v),x.A&&x.A.locals&&x.A.locals}}]);