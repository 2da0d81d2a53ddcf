"use strict";(self.rspackChunknothing_lab=self.rspackChunknothing_lab||[]).push([[232],{475(n,t,a){var o=a(601),e=a.n(o),r=a(314),i=(a.n(r))()(e());i.push([n.id,`.nai-RunsPanel {
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
`,""]),a.d(t,{},{A:i})},314(n){n.exports=function(n){var t=[];return t.toString=function(){return this.map(function(t){var a="",o=void 0!==t[5];return t[4]&&(a+="@supports (".concat(t[4],") {")),t[2]&&(a+="@media ".concat(t[2]," {")),o&&(a+="@layer".concat(t[5].length>0?" ".concat(t[5]):""," {")),a+=n(t),o&&(a+="}"),t[2]&&(a+="}"),t[4]&&(a+="}"),a}).join("")},t.i=function(n,a,o,e,r){"string"==typeof n&&(n=[[null,n,void 0]]);var i={};if(o)for(var p=0;p<this.length;p++){var s=this[p][0];null!=s&&(i[s]=!0)}for(var l=0;l<n.length;l++){var c=[].concat(n[l]);o&&i[c[0]]||(void 0!==r&&(void 0===c[5]||(c[1]="@layer".concat(c[5].length>0?" ".concat(c[5]):""," {").concat(c[1],"}")),c[5]=r),a&&(c[2]&&(c[1]="@media ".concat(c[2]," {").concat(c[1],"}")),c[2]=a),e&&(c[4]?(c[1]="@supports (".concat(c[4],") {").concat(c[1],"}"),c[4]=e):c[4]="".concat(e)),t.push(c))}},t}},601(n){n.exports=function(n){return n[1]}},72(n){var t=[];function a(n){for(var a=-1,o=0;o<t.length;o++)if(t[o].identifier===n){a=o;break}return a}function o(n,o){for(var e={},r=[],i=0;i<n.length;i++){var p=n[i],s=o.base?p[0]+o.base:p[0],l=e[s]||0,c="".concat(s," ").concat(l);e[s]=l+1;var d=a(c),u={css:p[1],media:p[2],sourceMap:p[3],supports:p[4],layer:p[5]};if(-1!==d)t[d].references++,t[d].updater(u);else{var f=function(n,t){var a=t.domAPI(t);return a.update(n),function(t){t?(t.css!==n.css||t.media!==n.media||t.sourceMap!==n.sourceMap||t.supports!==n.supports||t.layer!==n.layer)&&a.update(n=t):a.remove()}}(u,o);o.byIndex=i,t.splice(i,0,{identifier:c,updater:f,references:1})}r.push(c)}return r}n.exports=function(n,e){var r=o(n=n||[],e=e||{});return function(n){n=n||[];for(var i=0;i<r.length;i++){var p=a(r[i]);t[p].references--}for(var s=o(n,e),l=0;l<r.length;l++){var c=a(r[l]);0===t[c].references&&(t[c].updater(),t.splice(c,1))}r=s}}},659(n){var t={};n.exports=function(n,a){var o=function(n){if(void 0===t[n]){var a=document.querySelector(n);if(window.HTMLIFrameElement&&a instanceof window.HTMLIFrameElement)try{a=a.contentDocument.head}catch(n){a=null}t[n]=a}return t[n]}(n);if(!o)throw Error("Couldn't find a style target. This probably means that the value for the 'insert' parameter is invalid.");o.appendChild(a)}},540(n){n.exports=function(n){var t=document.createElement("style");return n.setAttributes(t,n.attributes),n.insert(t,n.options),t}},56(n,t,a){n.exports=function(n){var t=a.nc;t&&n.setAttribute("nonce",t)}},206(n){n.exports=function(n){if("u"<typeof document)return{update:function(){},remove:function(){}};var t=n.insertStyleElement(n);return{update:function(a){var o,e,r;o="",a.supports&&(o+="@supports (".concat(a.supports,") {")),a.media&&(o+="@media ".concat(a.media," {")),(e=void 0!==a.layer)&&(o+="@layer".concat(a.layer.length>0?" ".concat(a.layer):""," {")),o+=a.css,e&&(o+="}"),a.media&&(o+="}"),a.supports&&(o+="}"),(r=a.sourceMap)&&"u">typeof btoa&&(o+="\n/*# sourceMappingURL=data:application/json;base64,".concat(btoa(unescape(encodeURIComponent(JSON.stringify(r))))," */")),n.styleTagTransform(o,t,n.options)},remove:function(){var n;null===(n=t).parentNode||n.parentNode.removeChild(n)}}}},113(n){n.exports=function(n,t){if(t.styleSheet)t.styleSheet.cssText=n;else{for(;t.firstChild;)t.removeChild(t.firstChild);t.appendChild(document.createTextNode(n))}}},579(n,t,a){var o=a(72),e=a.n(o),r=a(206),i=a.n(r),p=a(659),s=a.n(p),l=a(56),c=a.n(l),d=a(540),u=a.n(d),f=a(113),g=a.n(f),v=a(475),x={};x.styleTagTransform=g(),x.setAttributes=c(),x.insert=s().bind(null,"head"),x.domAPI=i(),x.insertStyleElement=u(),e()(v.A,x),v.A&&v.A.locals&&v.A.locals}}]);