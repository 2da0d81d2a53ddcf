"use strict";(self.rspackChunknothing_lab=self.rspackChunknothing_lab||[]).push([[232],{475(n,t,e){var r=e(601),a=e.n(r),o=e(314),i=(e.n(o))()(a());i.push([n.id,`.nai-RunsPanel {
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
`,""]),e.d(t,{},{A:i})},314(n){n.exports=function(n){var t=[];return t.toString=function(){return this.map(function(t){var e="",r=void 0!==t[5];return t[4]&&(e+="@supports (".concat(t[4],") {")),t[2]&&(e+="@media ".concat(t[2]," {")),r&&(e+="@layer".concat(t[5].length>0?" ".concat(t[5]):""," {")),e+=n(t),r&&(e+="}"),t[2]&&(e+="}"),t[4]&&(e+="}"),e}).join("")},t.i=function(n,e,r,a,o){"string"==typeof n&&(n=[[null,n,void 0]]);var i={};if(r)for(var p=0;p<this.length;p++){var s=this[p][0];null!=s&&(i[s]=!0)}for(var c=0;c<n.length;c++){var l=[].concat(n[c]);r&&i[l[0]]||(void 0!==o&&(void 0===l[5]||(l[1]="@layer".concat(l[5].length>0?" ".concat(l[5]):""," {").concat(l[1],"}")),l[5]=o),e&&(l[2]&&(l[1]="@media ".concat(l[2]," {").concat(l[1],"}")),l[2]=e),a&&(l[4]?(l[1]="@supports (".concat(l[4],") {").concat(l[1],"}"),l[4]=a):l[4]="".concat(a)),t.push(l))}},t}},601(n){n.exports=function(n){return n[1]}},72(n){var t=[];function e(n){for(var e=-1,r=0;r<t.length;r++)if(t[r].identifier===n){e=r;break}return e}function r(n,r){for(var a={},o=[],i=0;i<n.length;i++){var p=n[i],s=r.base?p[0]+r.base:p[0],c=a[s]||0,l="".concat(s," ").concat(c);a[s]=c+1;var u=e(l),d={css:p[1],media:p[2],sourceMap:p[3],supports:p[4],layer:p[5]};if(-1!==u)t[u].references++,t[u].updater(d);else{var f=function(n,t){var e=t.domAPI(t);return e.update(n),function(t){t?(t.css!==n.css||t.media!==n.media||t.sourceMap!==n.sourceMap||t.supports!==n.supports||t.layer!==n.layer)&&e.update(n=t):e.remove()}}(d,r);r.byIndex=i,t.splice(i,0,{identifier:l,updater:f,references:1})}o.push(l)}return o}n.exports=function(n,a){var o=r(n=n||[],a=a||{});return function(n){n=n||[];for(var i=0;i<o.length;i++){var p=e(o[i]);t[p].references--}for(var s=r(n,a),c=0;c<o.length;c++){var l=e(o[c]);0===t[l].references&&(t[l].updater(),t.splice(l,1))}o=s}}},659(n){var t={};n.exports=function(n,e){var r=function(n){if(void 0===t[n]){var e=document.querySelector(n);if(window.HTMLIFrameElement&&e instanceof window.HTMLIFrameElement)try{e=e.contentDocument.head}catch(n){e=null}t[n]=e}return t[n]}(n);if(!r)throw Error("Couldn't find a style target. This probably means that the value for the 'insert' parameter is invalid.");r.appendChild(e)}},540(n){n.exports=function(n){var t=document.createElement("style");return n.setAttributes(t,n.attributes),n.insert(t,n.options),t}},56(n,t,e){n.exports=function(n){var t=e.nc;t&&n.setAttribute("nonce",t)}},206(n){n.exports=function(n){if("u"<typeof document)return{update:function(){},remove:function(){}};var t=n.insertStyleElement(n);return{update:function(e){var r,a,o;r="",e.supports&&(r+="@supports (".concat(e.supports,") {")),e.media&&(r+="@media ".concat(e.media," {")),(a=void 0!==e.layer)&&(r+="@layer".concat(e.layer.length>0?" ".concat(e.layer):""," {")),r+=e.css,a&&(r+="}"),e.media&&(r+="}"),e.supports&&(r+="}"),(o=e.sourceMap)&&"u">typeof btoa&&(r+="\n/*# sourceMappingURL=data:application/json;base64,".concat(btoa(unescape(encodeURIComponent(JSON.stringify(o))))," */")),n.styleTagTransform(r,t,n.options)},remove:function(){var n;null===(n=t).parentNode||n.parentNode.removeChild(n)}}}},113(n){n.exports=function(n,t){if(t.styleSheet)t.styleSheet.cssText=n;else{for(;t.firstChild;)t.removeChild(t.firstChild);t.appendChild(document.createTextNode(n))}}},579(n,t,e){var r=e(72),a=e.n(r),o=e(206),i=e.n(o),p=e(659),s=e.n(p),c=e(56),l=e.n(c),u=e(540),d=e.n(u),f=e(113),g=e.n(f),v=e(475),h={};h.styleTagTransform=g(),h.setAttributes=l(),h.insert=s().bind(null,"head"),h.domAPI=i(),h.insertStyleElement=d(),a()(v.A,h),v.A&&v.A.locals&&v.A.locals}}]);