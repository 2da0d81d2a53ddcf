"use strict";(self.rspackChunknothing_lab=self.rspackChunknothing_lab||[]).push([[232],{475(r,e,t){var n=t(601),o=t.n(n),a=t(314),i=(t.n(a))()(o());i.push([r.id,`.nai-RunsPanel {
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
`,""]),t.d(e,{},{A:i})},314(r){r.exports=function(r){var e=[];return e.toString=function(){return this.map(function(e){var t="",n=void 0!==e[5];return e[4]&&(t+="@supports (".concat(e[4],") {")),e[2]&&(t+="@media ".concat(e[2]," {")),n&&(t+="@layer".concat(e[5].length>0?" ".concat(e[5]):""," {")),t+=r(e),n&&(t+="}"),e[2]&&(t+="}"),e[4]&&(t+="}"),t}).join("")},e.i=function(r,t,n,o,a){"string"==typeof r&&(r=[[null,r,void 0]]);var i={};if(n)for(var p=0;p<this.length;p++){var c=this[p][0];null!=c&&(i[c]=!0)}for(var s=0;s<r.length;s++){var l=[].concat(r[s]);n&&i[l[0]]||(void 0!==a&&(void 0===l[5]||(l[1]="@layer".concat(l[5].length>0?" ".concat(l[5]):""," {").concat(l[1],"}")),l[5]=a),t&&(l[2]&&(l[1]="@media ".concat(l[2]," {").concat(l[1],"}")),l[2]=t),o&&(l[4]?(l[1]="@supports (".concat(l[4],") {").concat(l[1],"}"),l[4]=o):l[4]="".concat(o)),e.push(l))}},e}},601(r){r.exports=function(r){return r[1]}},72(r){var e=[];function t(r){for(var t=-1,n=0;n<e.length;n++)if(e[n].identifier===r){t=n;break}return t}function n(r,n){for(var o={},a=[],i=0;i<r.length;i++){var p=r[i],c=n.base?p[0]+n.base:p[0],s=o[c]||0,l="".concat(c," ").concat(s);o[c]=s+1;var u=t(l),d={css:p[1],media:p[2],sourceMap:p[3],supports:p[4],layer:p[5]};if(-1!==u)e[u].references++,e[u].updater(d);else{var f=function(r,e){var t=e.domAPI(e);return t.update(r),function(e){e?(e.css!==r.css||e.media!==r.media||e.sourceMap!==r.sourceMap||e.supports!==r.supports||e.layer!==r.layer)&&t.update(r=e):t.remove()}}(d,n);n.byIndex=i,e.splice(i,0,{identifier:l,updater:f,references:1})}a.push(l)}return a}r.exports=function(r,o){var a=n(r=r||[],o=o||{});return function(r){r=r||[];for(var i=0;i<a.length;i++){var p=t(a[i]);e[p].references--}for(var c=n(r,o),s=0;s<a.length;s++){var l=t(a[s]);0===e[l].references&&(e[l].updater(),e.splice(l,1))}a=c}}},659(r){var e={};r.exports=function(r,t){var n=function(r){if(void 0===e[r]){var t=document.querySelector(r);if(window.HTMLIFrameElement&&t instanceof window.HTMLIFrameElement)try{t=t.contentDocument.head}catch(r){t=null}e[r]=t}return e[r]}(r);if(!n)throw Error("Couldn't find a style target. This probably means that the value for the 'insert' parameter is invalid.");n.appendChild(t)}},540(r){r.exports=function(r){var e=document.createElement("style");return r.setAttributes(e,r.attributes),r.insert(e,r.options),e}},56(r,e,t){r.exports=function(r){var e=t.nc;e&&r.setAttribute("nonce",e)}},206(r){r.exports=function(r){if("u"<typeof document)return{update:function(){},remove:function(){}};var e=r.insertStyleElement(r);return{update:function(t){var n,o,a;n="",t.supports&&(n+="@supports (".concat(t.supports,") {")),t.media&&(n+="@media ".concat(t.media," {")),(o=void 0!==t.layer)&&(n+="@layer".concat(t.layer.length>0?" ".concat(t.layer):""," {")),n+=t.css,o&&(n+="}"),t.media&&(n+="}"),t.supports&&(n+="}"),(a=t.sourceMap)&&"u">typeof btoa&&(n+="\n/*# sourceMappingURL=data:application/json;base64,".concat(btoa(unescape(encodeURIComponent(JSON.stringify(a))))," */")),r.styleTagTransform(n,e,r.options)},remove:function(){var r;null===(r=e).parentNode||r.parentNode.removeChild(r)}}}},113(r){r.exports=function(r,e){if(e.styleSheet)e.styleSheet.cssText=r;else{for(;e.firstChild;)e.removeChild(e.firstChild);e.appendChild(document.createTextNode(r))}}},579(r,e,t){var n=t(72),o=t.n(n),a=t(206),i=t.n(a),p=t(659),c=t.n(p),s=t(56),l=t.n(s),u=t(540),d=t.n(u),f=t(113),g=t.n(f),v=t(475),m={};m.styleTagTransform=g(),m.setAttributes=l(),m.insert=c().bind(null,"head"),m.domAPI=i(),m.insertStyleElement=d(),o()(v.A,m),v.A&&v.A.locals&&v.A.locals}}]);