// Referral directory: "Use my location" asks the browser for its position, puts it in the
// form's hidden fields and submits (POST: the position never goes into a URL). Shown only
// where the browser can do it; without JavaScript the postcode/city search still works.
(function () {
  "use strict";
  var button = document.getElementById("use-location");
  var form = document.getElementById("referral-search");
  if (!button || !form || !("geolocation" in navigator)) return;
  var status = document.getElementById("location-status");
  button.hidden = false;
  button.addEventListener("click", function () {
    status.textContent = "Asking your browser for your location…";
    navigator.geolocation.getCurrentPosition(
      function (position) {
        form.elements.latitude.value = position.coords.latitude.toFixed(5);
        form.elements.longitude.value = position.coords.longitude.toFixed(5);
        form.elements.place.value = "";
        status.textContent = "Location found; searching…";
        form.submit();
      },
      function () {
        status.textContent = "Your location is not available. Type a postcode or city instead.";
        form.elements.place.focus();
      },
      { enableHighAccuracy: false, timeout: 10000, maximumAge: 600000 }
    );
  });
})();
